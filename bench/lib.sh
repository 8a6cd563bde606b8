# bench/lib.sh: what the benchmark scripts share (sourced by run.sh and scale.sh).
# The sourcing script sets, before sourcing: ROOT, EX (examples dir), BIN, WORKERS,
# WRK_THREADS, PG_BASE, SERVICE_ENV (array); after: ENC_KEYS, ADMIN, TARGETS as it needs.
# Sourcing makes WORK (a temp dir) and PIDS, and stops every process in PIDS on exit.
log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FAILED: $*"; exit 1; }

WORK=$(mktemp -d /tmp/oauth-broker-bench.XXXXXX)
PIDS=()
PG_DB=""

alive() { local s; s=$(ps -o stat= -p "$1" 2>/dev/null) && [[ $s != Z* ]]; }

stop() {
  local pid=$1
  kill -TERM "$pid" 2>/dev/null || return 0
  for _ in $(seq 100); do alive "$pid" || break; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}

cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do stop "$pid"; done
  if [ -n "$PG_DB" ]; then
    psql "$PG_BASE/postgres" -qAtc "drop database if exists $PG_DB with (force)" >/dev/null 2>&1 || true
  fi
  if [ -n "${BENCH_KEEP:-}" ] || [ "$rc" -ne 0 ]; then
    log "logs and data kept in $WORK"
  else
    rm -rf "$WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---------------------------------------------------------------------------- helpers

# A port nobody listens on, below the ephemeral range (where client sockets, e.g. the
# stampede's 1,000, would make bind fail).
free_port() {
  local p low
  low=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
  for _ in $(seq 100); do
    p=$((10000 + RANDOM % (low - 10000)))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  die "no free port"
}

# wait_http URL PID LOG: until URL answers 2xx (60 s at most), or the process dies.
wait_http() {
  local deadline=$(($(date +%s) + 60))
  until curl -sf -o /dev/null --max-time 1 "$1"; do
    alive "$2" || { tail -20 "$3" >&2; die "process $2 died (log: $3)"; }
    [ "$(date +%s)" -lt "$deadline" ] || die "$1 not ready after 60 s"
    sleep 0.005
  done
}

now_ns() { date +%s%N; }
# TcpExt ListenOverflows of this network namespace: SYNs dropped because an accept queue was full.
listen_overflows() { awk '/^TcpExt:/ { if (!h) { for (i = 1; i <= NF; i++) if ($i == "ListenOverflows") c = i; h = 1 } else print $c + 0 }' /proc/net/netstat 2>/dev/null || echo 0; }
rss_kb() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/ {print $2}' "/proc/$1/status"; }
calc() { awk "BEGIN { printf \"%s\", ($1) }"; }
mb() { calc "sprintf(\"%.1f\", $1 / 1024)"; }
ms() { calc "sprintf(\"%.2f\", $1 / 1000)"; }
group() { awk -v x="$1" 'BEGIN { s = sprintf("%.0f", x); r = ""; while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) } print s r }'; }
is() { [ "$(calc "($1) ? 1 : 0")" = 1 ]; }
pct() { calc "$2 > 0 ? sprintf(\"%.0f%%\", 100 * $1 / $2) : \"n/a\""; }

# start_fake [ADDR]: the fake token endpoint on a free port (ADDR 127.0.0.1:0; 0.0.0.0:0
# lets every 127.0.0.x reach it: several provider "hosts" for the per-host limit); sets
# FAKE_URL (on 127.0.0.1) and FAKE_PID.
start_fake() {
  "$EX/fake_token_endpoint" "${1:-127.0.0.1:0}" --workers "${FAKE_WORKERS:-1}" >"$WORK/fake.log" 2>&1 &
  FAKE_PID=$!
  PIDS+=("$FAKE_PID")
  for _ in $(seq 500); do
    grep -q '^listening on ' "$WORK/fake.log" && break
    alive "$FAKE_PID" || die "the fake token endpoint died: $(cat "$WORK/fake.log")"
    sleep 0.01
  done
  FAKE_URL="http://$(sed -n 's/^listening on //p' "$WORK/fake.log" | sed 's/^0\.0\.0\.0:/127.0.0.1:/')"
}

# start_service NAME DATABASE_URL [VAR=value...]: sets SVC_PID, SVC_URL, READY_MS.
# Tries another port if the chosen one was taken meanwhile.
start_service() {
  local attempt
  for attempt in 1 2 3; do
    start_service_once "$@" && return
    log "  port taken, retrying"
  done
  die "the service did not start (log: $WORK/$1.log)"
}

start_service_once() {
  local name=$1 db=$2
  shift 2
  local port t0
  port=$(free_port)
  SVC_URL=http://127.0.0.1:$port
  t0=$(now_ns)
  env OAUTH_BROKER_LISTEN="127.0.0.1:$port" \
    OAUTH_BROKER_DATABASE_URL="$db" \
    OAUTH_BROKER_ENCRYPTION_KEYS="$ENC_KEYS" \
    OAUTH_BROKER_BOOTSTRAP_ADMIN_KEY="$ADMIN" \
    OAUTH_BROKER_ALLOW_PRIVATE_PROVIDER_ADDRESSES=true \
    OAUTH_BROKER_HTTP_WORKERS="$WORKERS" \
    OAUTH_BROKER_REFRESHER_ENABLED=false \
    OAUTH_BROKER_LOG_FORMAT=json \
    RUST_LOG=warn "${SERVICE_ENV[@]}" "$@" "$BIN" serve >>"$WORK/$name.log" 2>&1 &
  SVC_PID=$!
  PIDS+=("$SVC_PID")
  until curl -sf -o /dev/null --max-time 1 "$SVC_URL/readyz"; do
    if ! alive "$SVC_PID"; then
      wait "$SVC_PID" 2>/dev/null || true
      grep -q 'Address already in use' "$WORK/$name.log" && return 1
      tail -20 "$WORK/$name.log" >&2
      die "the service died (log: $WORK/$name.log)"
    fi
    [ $((($(now_ns) - t0) / 1000000000)) -lt 60 ] || die "$SVC_URL/readyz not ready after 60 s"
    sleep 0.005
  done
  READY_MS=$((($(now_ns) - t0) / 1000000))
}

# start_baseline BODY_FILE: sets BASE_PID, BASE_URL, BASE_READY_MS.
start_baseline() {
  local port t0
  port=$(free_port)
  BASE_URL=http://127.0.0.1:$port
  t0=$(now_ns)
  "$EX/baseline_server" "127.0.0.1:$port" "$1" "$WORKERS" >"$WORK/baseline.log" 2>&1 &
  BASE_PID=$!
  PIDS+=("$BASE_PID")
  wait_http "$BASE_URL/api/oauth/credentials/x" "$BASE_PID" "$WORK/baseline.log"
  BASE_READY_MS=$((($(now_ns) - t0) / 1000000))
}

# run_wrk LABEL URL CONNECTIONS SECONDS [SCRIPT]: sets W_RPS W_P50 W_P99 (microseconds)
# and W_BAD (non-2xx plus socket errors); logs the full output.
run_wrk() {
  local label=$1 url=$2 c=$3 d=$4 script=${5:-$ROOT/bench/credentials.lua}
  local t=$((c < WRK_THREADS ? c : WRK_THREADS)) out line
  out=$(BENCH_TARGETS="$TARGETS" wrk -t"$t" -c"$c" -d"${d}s" --timeout 10s -s "$script" "$url" 2>&1) ||
    die "wrk $label: $out"
  printf '== %s (c=%s, %ss)\n%s\n' "$label" "$c" "$d" "$out" >>"$WORK/wrk.log"
  line=$(grep '^WRK_RESULT' <<<"$out") || die "wrk $label printed no result: $out"
  W_RPS=$(sed -E 's/.* rps=([^ ]+).*/\1/' <<<"$line")
  W_P50=$(sed -E 's/.* p50_us=([^ ]+).*/\1/' <<<"$line")
  W_P99=$(sed -E 's/.* p99_us=([^ ]+).*/\1/' <<<"$line")
  W_BAD=$(awk '{ for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] ~ /^(non2xx|connect|read|write|timeout)$/) n += kv[2] } } END { print n + 0 }' <<<"$line")
  log "  $label c=$c: $(group "$W_RPS") req/s, p50 $(ms "$W_P50") ms, p99 $(ms "$W_P99") ms, errors $W_BAD"
}

ROWS=()
# row SCENARIO MEASUREMENT BROKER BASELINE RATIO TARGET VERDICT
row() {
  ROWS+=("| $1 | $2 | $3 | $4 | $5 | $6 | $7 |")
}
NOTES=()
note() { NOTES+=("$*"); }
wrk_cell() { echo "$(group "$1") req/s, p50 $(ms "$2") ms, p99 $(ms "$3") ms$([ "$4" = 0 ] || echo ", **$4 errors**")"; }

admin_curl() { curl -sS -H "Authorization: Bearer $ADMIN" -H "Content-Type: application/json" "$@"; }
