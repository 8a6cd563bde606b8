#!/usr/bin/env bash
# bench/scale.sh: issue 20's figures, a million connections. Every process on 127.0.0.1,
# stopped on exit; data seeded through the store in bulk (examples/bench_seed.rs direct:
# 1,000 connections per transaction). Prints a markdown table (and appends it to
# $BENCH_OUTPUT when set).
#
#   1. SQLite, 10,000 then 1,000,000 connections (100 orgs): credentials throughput at 64
#      connections (wrk, reads spread at random over 10,000 of the rows, admin key), the
#      p99 of a connections page (100 rows) at the start and at the end of the list (wrk,
#      one connection),
#      database bytes per connection, idle RSS after a restart.
#   2. Refresher, fast loopback token endpoint on 8 provider hosts (127.0.0.1-8, one
#      server bound to 0.0.0.0), default limits (64 in all, 8 per host): 100,000 and
#      1,000,000 due connections on SQLite, one manual run each: time, rate, peak RSS;
#      100,000 on PostgreSQL.
#   3. Refresher, a token endpoint answering after 100 ms, 8 hosts: $SLOW_N due on SQLite
#      and on PostgreSQL with one replica, then with two replicas (both start a run at
#      once; the claim splits the work).
#
# Knobs: BENCH_SCALE_SIZES="100000 1000000" BENCH_CRED_SIZES="10000 1000000"
#   BENCH_SLOW_N=20000 BENCH_PG_FAST_N=100000 BENCH_DURATION=10 BENCH_POSTGRES=postgres://postgres@127.0.0.1:5432
#   ("" skips PostgreSQL) BENCH_NO_BUILD=1 BENCH_KEEP=1 BENCH_OUTPUT=file
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
for v in $(compgen -e | grep '^OAUTH_BROKER_' || true); do unset "$v"; done
SIZES=${BENCH_SCALE_SIZES-"100000 1000000"}
CRED_SIZES=${BENCH_CRED_SIZES-"10000 1000000"}
SLOW_N=${BENCH_SLOW_N:-20000}
DURATION=${BENCH_DURATION:-10}
PG_BASE=${BENCH_POSTGRES-postgres://postgres@127.0.0.1:5432}
OUTPUT=${BENCH_OUTPUT:-}
BIN=$ROOT/target/release/oauth-broker
EX=$ROOT/target/release/examples
WORKERS=$(nproc)
WRK_THREADS=2
SERVICE_ENV=()
TIMEOUT=${BENCH_REFRESH_TIMEOUT:-1800}
# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

if [ -z "${BENCH_NO_BUILD:-}" ]; then
  cargo build --release --examples --bins 2>&1 | tail -1 >&2
fi
command -v wrk >/dev/null || { apt-get update -qq && apt-get install -y -qq wrk >/dev/null; }
ENC_KEYS="k1:$(head -c 32 /dev/urandom | base64)"
ADMIN="obk_bench_$(head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
FAKE_WORKERS=2 start_fake 0.0.0.0:0
log "fake token endpoint at $FAKE_URL; load $(cut -d' ' -f1-3 /proc/loadavg)"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

ROWS=()
row() { ROWS+=("| $1 | $2 | $3 |"); }
seed() { # seed DB N TOKEN_URL EXPIRES_IN
  OAUTH_BROKER_ENCRYPTION_KEYS="$ENC_KEYS" "$EX/bench_seed" direct "$1" "$3" "$2" \
    --orgs 100 --hosts 8 --expires-in "$4" 2>&1 | tee -a "$WORK/seed.log" >&2
}
pg_db() { # a fresh database; prints its URL
  local name=ob_scale_$1_$$
  psql "$PG_BASE/postgres" -qAtc "drop database if exists $name with (force)" -c "create database $name" >/dev/null
  PG_DBS+=("$name")
  echo "$PG_BASE/$name"
}
PG_DBS=()
drop_pg() { for d in "${PG_DBS[@]}"; do psql "$PG_BASE/postgres" -qAtc "drop database if exists $d with (force)" >/dev/null 2>&1 || true; done; }
trap 'drop_pg; cleanup' EXIT

# run_refresh LABEL URL...: one manual run on each service URL at once; waits for all;
# sets RUN_SECS RUN_REFRESHED RUN_FAILED.
run_refresh() {
  local label=$1; shift
  local url t0 st done_all deadline
  t0=$(now_ns)
  for url in "$@"; do
    [ "$(admin_curl -o /dev/null -w '%{http_code}' -X POST "$url/api/oauth/refresh/run")" = 202 ] || die "$label: run refused"
  done
  sleep 0.5
  deadline=$(($(date +%s) + TIMEOUT))
  while :; do
    done_all=1
    for url in "$@"; do
      st=$(admin_curl "$url/api/oauth/refresh/status")
      [ "$(jq -r '.running' <<<"$st")" = null ] || done_all=""
    done
    [ -z "$done_all" ] || break
    [ "$(date +%s)" -lt "$deadline" ] || die "$label: not finished after $TIMEOUT s"
    sleep 0.5
  done
  RUN_SECS=$(calc "($(now_ns) - $t0) / 1e9")
  RUN_REFRESHED=$(curl -sf "$FAKE_URL/calls" | jq .total)
  RUN_FAILED=$(admin_curl "$1/api/oauth/refresh/status" | jq '.last_run.failed')
  log "  $label: $(calc "sprintf(\"%.1f\", $RUN_SECS)") s, $RUN_REFRESHED provider calls, $(group "$(calc "$RUN_REFRESHED / $RUN_SECS")")/s"
}

refresher() { # refresher LABEL DB N TOKEN_URL [REPLICAS]
  local label=$1 db=$2 n=$3 token_url=$4 replicas=${5:-1} urls=() pids=() i hwm=0
  seed "$db" "$n" "$token_url" 1800
  curl -sf -X POST "$FAKE_URL/reset" >/dev/null
  for i in $(seq "$replicas"); do
    start_service "refresh-$label-$i" "$db" OAUTH_BROKER_REFRESHER_ENABLED=true \
      OAUTH_BROKER_REFRESH_STARTUP_DELAY_SECONDS=86400 OAUTH_BROKER_REFRESH_CRON="0 0 0 1 1 *"
    urls+=("$SVC_URL"); pids+=("$SVC_PID")
  done
  run_refresh "$label" "${urls[@]}"
  for i in "${pids[@]}"; do hwm=$(calc "$hwm > $(hwm_kb "$i") ? $hwm : $(hwm_kb "$i")"); stop "$i"; done
  REF_RATE=$(calc "$RUN_REFRESHED / $RUN_SECS")
  row "refresher, $label" "$(group "$n") due, $replicas replica(s)" \
    "$(calc "sprintf(\"%.1f\", $RUN_SECS)") s, $(group "$RUN_REFRESHED") provider calls (run failures: $RUN_FAILED), **$(group "$REF_RATE")/s**, peak RSS $(mb "$hwm") MB"
}

# ----------------------------------------------------- 1. a million rows on SQLite
declare -A CRED_RPS
for n in $CRED_SIZES; do
  log "1. SQLite with $(group "$n") connections"
  dir=$WORK/rows-$n; mkdir -p "$dir"; db="sqlite://$dir/broker.db"
  seed "$db" "$n" "$FAKE_URL/token" 36000
  start_service "rows-$n" "$db"
  TARGETS=$WORK/targets-$n.txt
  awk -v n="$n" -v k="$ADMIN" 'BEGIN { srand(7); for (i = 0; i < 10000; i++) { r = int(rand() * n); printf "%s org%d r%d\n", k, r % 100, r } }' >"$TARGETS"
  run_wrk "credentials, $n rows" "$SVC_URL" 16 2 "$ROOT/bench/credentials.lua" >/dev/null
  run_wrk "credentials, $n rows" "$SVC_URL" 64 "$DURATION" "$ROOT/bench/credentials.lua"
  CRED_RPS[$n]=$W_RPS
  row "SQLite, $(group "$n") connections" "credentials, 64 connections" "$(group "$W_RPS") req/s, p50 $(ms "$W_P50") ms, p99 $(ms "$W_P99") ms, errors $W_BAD"
  # A page at the start and one at the end of org99's list (its last names sort last).
  printf '%s org99 /api/oauth/connections?include_global=false&limit=100\n' "$ADMIN" >"$WORK/list-$n.txt"
  printf '%s org99 /api/oauth/connections?include_global=false&limit=100&starting_after=%s\n' "$ADMIN" \
    "$(printf '["org99","r%d"]' "$((n - 200))" | base64 -w0 | tr '+/' '-_' | tr -d '=')" >>"$WORK/list-$n.txt"
  # One connection: what a page costs, not how pages queue behind each other on 2 cores.
  TARGETS=$WORK/list-$n.txt run_wrk "connections page, $n rows" "$SVC_URL" 1 "$DURATION" "$ROOT/bench/credentials.lua"
  row "SQLite, $(group "$n") connections" "a connections page of 100 (first, and deep in the list), 1 connection" "$(group "$W_RPS") req/s, p50 $(ms "$W_P50") ms, **p99 $(ms "$W_P99") ms**, errors $W_BAD"
  stop "$SVC_PID"
  bytes=$(du -cb "$dir"/broker.db* | tail -1 | cut -f1)
  start_service "rows-$n-idle" "$db"; sleep 2
  row "SQLite, $(group "$n") connections" "database bytes per connection; idle RSS after a restart" "$(group "$(calc "$bytes / $n")") bytes/connection ($(mb "$((bytes / 1024))") MB in all); idle RSS $(mb "$(rss_kb "$SVC_PID")") MB"
  stop "$SVC_PID"
done
set -- $CRED_SIZES
if [ $# -ge 2 ]; then
  row "SQLite" "credentials throughput, $(group "$2") rows / $(group "$1") rows" "**$(pct "${CRED_RPS[$2]}" "${CRED_RPS[$1]}")**"
fi

# ---------------------------------------------- 2. refresher, fast token endpoint
declare -A FAST
for n in $SIZES; do
  log "2. refresher, $(group "$n") due on SQLite"
  dir=$WORK/fast-$n; mkdir -p "$dir"
  refresher "SQLite, fast endpoint" "sqlite://$dir/broker.db" "$n" "$FAKE_URL/token"
  FAST[$n]=$RUN_SECS
done
set -- $SIZES
if [ $# -ge 2 ]; then
  row "refresher, SQLite" "time ratio $(group "$2") / $(group "$1")" "**$(calc "sprintf(\"%.1f\", ${FAST[$2]} / ${FAST[$1]})")** (linear: $(calc "$2 / $1"))"
fi
if [ -n "$PG_BASE" ]; then
  log "2. refresher, 100,000 due on PostgreSQL"
  refresher "PostgreSQL, fast endpoint" "$(pg_db fast)" "${BENCH_PG_FAST_N:-100000}" "$FAKE_URL/token"
fi

# ---------------------------------------------- 3. refresher, 100 ms token endpoint
log "3. refresher, 100 ms endpoint"
dir=$WORK/slow; mkdir -p "$dir"
refresher "SQLite, 100 ms endpoint" "sqlite://$dir/broker.db" "$SLOW_N" "$FAKE_URL/token?delay_ms=100"
if [ -n "$PG_BASE" ]; then
  refresher "PostgreSQL, 100 ms endpoint" "$(pg_db slow1)" "$SLOW_N" "$FAKE_URL/token?delay_ms=100" 1
  one=$REF_RATE
  refresher "PostgreSQL, 100 ms endpoint" "$(pg_db slow2)" "$SLOW_N" "$FAKE_URL/token?delay_ms=100" 2
  row "refresher, PostgreSQL, 100 ms endpoint" "two replicas / one" "**$(calc "sprintf(\"%.2fx\", $REF_RATE / $one)")**"
fi

{
  echo "Run $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD), \`bench/scale.sh\`; load average $LOAD_BEFORE before, $(cut -d' ' -f1-3 /proc/loadavg) after; $(nproc) cores."
  echo
  echo "| scenario | measurement | oauth-broker |"
  echo "|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
} | tee "$WORK/scale.md"
[ -z "$OUTPUT" ] || cat "$WORK/scale.md" >>"$OUTPUT"
