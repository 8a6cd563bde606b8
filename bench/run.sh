#!/usr/bin/env bash
# bench/run.sh: the oauth-broker benchmark (issue 6). Every figure is measured beside a
# baseline in the same run, on the same machine, because machines are shared and noisy.
#
#     bench/run.sh            # about 10-15 minutes on 2 cores; prints the table and
#                             # rewrites the generated part of BENCHMARKS.md
#
# What it does, all on 127.0.0.1, every process stopped on exit (also on failure or ^C):
#   0. `cargo build --release --examples --bins`; installs wrk (apt-get) if missing.
#   1. Credentials on SQLite: starts examples/fake_token_endpoint.rs (the provider) and the
#      release binary (fresh SQLite in a temp dir, refresher off, RUST_LOG=warn), seeds
#      through the API (examples/bench_seed.rs api) 100 workflow keys and 10,000
#      client_credentials connections: 5,000 in GLOBAL and 50 in each of 100 orgs; reads
#      spread at random over all of them, each with its org's workflow key, so half are
#      served by the GLOBAL fallback (bench/credentials.lua). wrk, $BENCH_DURATION s per
#      point, at 1, 16 and 64 connections, alternating with the baseline:
#      examples/baseline_server.rs, actix-web with the same worker count returning a real
#      credentials body (same size) with no auth, no database.
#      Plus one point at 16 connections with an X-Workflow-Id header (extra round trips).
#   2. The same on PostgreSQL (a fresh database on $BENCH_POSTGRES, dropped at the end),
#      plus pgbench running the service's own lookup query on a copy of the seeded table.
#   3. Stampede: 1,000 concurrent callers (examples/bench_stampede.rs) on one connection
#      whose token has expired; provider calls counted by the fake endpoint (must be 1).
#      Baseline: the same 1,000 callers against the baseline server.
#   4. Refresher: 10,000 and 100,000 due connections written straight into fresh SQLite
#      databases (examples/bench_seed.rs direct), one manual run each, spread over 8 loopback provider hosts (127.0.0.1-8)
#      (POST /api/oauth/refresh/run, polling /refresh/status) at the default concurrency;
#      time, refreshes/s, peak RSS (VmHWM). Baseline: the fake endpoint alone under wrk at
#      16 connections (the provider-side ceiling).
#   5. Footprint: idle RSS, time from exec to /readyz 200 (empty and seeded database),
#      binary size, each beside the baseline server's.
#
# Knobs (environment): BENCH_DURATION=10  BENCH_CONNECTIONS="1 16 64"
#   BENCH_WORKERS=$(nproc) (HTTP workers of service and baseline)  BENCH_WRK_THREADS=2
#   BENCH_ORGS=100 BENCH_PER_ORG=50 BENCH_GLOBAL=5000  BENCH_STAMPEDE_CALLERS=1000
#   BENCH_REFRESH_SIZES="10000 100000"  BENCH_REFRESH_TIMEOUT=480 (s, per run)
#   BENCH_POSTGRES=postgres://postgres@127.0.0.1:5432 ("" skips PostgreSQL)
#   BENCH_REFRESH_SIZES="" skips the refresher.  BENCH_OUTPUT=BENCHMARKS.md ("" only prints)
#   BENCH_NO_BUILD=1  BENCH_KEEP=1 (keep the temp dir with logs)  BENCH_DOCKER=1 (also build
#   the Docker image and report its size)
#   A/B runs: BENCH_BIN=/path/to/another/oauth-broker, BENCH_SERVICE_ENV="OAUTH_BROKER_X=y ..."
#   (extra settings for every service start), e.g.
#   BENCH_OUTPUT= BENCH_REFRESH_SIZES= BENCH_SERVICE_ENV=OAUTH_BROKER_DATABASE_MAX_CONNECTIONS=4 bench/run.sh
# Needs: cargo, curl, jq, wrk (installed with apt-get if missing), psql and pgbench.

set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
COMMAND="$( (env | grep '^BENCH_' || true) | sort | sed -E 's/=(.*)/="\1"/' | tr '\n' ' ')bench/run.sh${*:+ $*}"
for v in $(compgen -e | grep '^OAUTH_BROKER_' || true); do unset "$v"; done

DURATION=${BENCH_DURATION:-10}
CONNECTIONS=${BENCH_CONNECTIONS:-"1 16 64"}
NPROC=$(nproc)
WORKERS=${BENCH_WORKERS:-$NPROC}
WRK_THREADS=${BENCH_WRK_THREADS:-2}
ORGS=${BENCH_ORGS:-100}
PER_ORG=${BENCH_PER_ORG:-50}
GLOBAL=${BENCH_GLOBAL:-5000}
CALLERS=${BENCH_STAMPEDE_CALLERS:-1000}
REFRESH_SIZES=${BENCH_REFRESH_SIZES-"10000 100000"}
REFRESH_TIMEOUT=${BENCH_REFRESH_TIMEOUT:-480}
PG_BASE=${BENCH_POSTGRES-postgres://postgres@127.0.0.1:5432}
OUTPUT=${BENCH_OUTPUT-BENCHMARKS.md}
BIN=${BENCH_BIN:-$ROOT/target/release/oauth-broker}
read -r -a SERVICE_ENV <<<"${BENCH_SERVICE_ENV:-}"
EX=$ROOT/target/release/examples
SCRIPT_START=$(date +%s)

# shellcheck source=bench/lib.sh
source "$ROOT/bench/lib.sh"

# stampede LABEL: 1,000 callers on one connection whose token expired; adds a row.
stampede() {
  local label=$1 client=stampede-$1 created out calls ok statuses tokens served p99 overflows
  created=$(admin_curl -X POST "$SVC_URL/api/oauth/connections" -H "X-Organization-Id: stampede" \
    -d "{\"connection_name\": \"stampede\", \"oauth_flow_type\": \"client_credentials\",
         \"client_id\": \"$client\", \"client_secret\": \"s\", \"scopes\": [\"read\"],
         \"token_url\": \"$FAKE_URL/token?first_expires_in=1\"}")
  [ "$(jq -r .status <<<"$created")" = completed ] || die "stampede connection: $created"
  sleep 2 # the first token lived 1 s: it has expired
  overflows=$(listen_overflows)
  out=$("$EX/bench_stampede" "$SVC_URL/api/oauth/credentials/stampede" "$ADMIN" stampede \
    --callers "$CALLERS" --calls-url "$FAKE_URL/calls?client_id=$client")
  overflows=$(($(listen_overflows) - overflows))
  echo "stampede $label: $out, listen queue overflows $overflows" >>"$WORK/stampede.log"
  calls=$(jq .provider_calls <<<"$out")
  ok=$(jq .ok <<<"$out")
  statuses=$(jq -c .statuses <<<"$out")
  tokens=$(jq .distinct_tokens <<<"$out")
  served=$(jq .all_served_ms <<<"$out")
  p99=$(jq .p99_ms <<<"$out")
  log "  stampede $label: $out; listen queue overflows meanwhile: $overflows"
  row "3. stampede, $label" "$CALLERS concurrent callers, one expired token" \
    "**$calls provider call(s)**; $ok/$CALLERS served (statuses $statuses, $tokens distinct token) in $(calc "sprintf(\"%.0f\", $served)") ms, p99 $(calc "sprintf(\"%.0f\", $p99)") ms$([ "$overflows" = 0 ] || echo "; $overflows SYNs dropped by a full listen queue (each waits the 1 s SYN retransmission)")" \
    "same callers on the baseline handler: all served in $(calc "sprintf(\"%.0f\", $STAMPEDE_BASE_MS)") ms$([ "$STAMPEDE_BASE_OVF" = 0 ] || echo " ($STAMPEDE_BASE_OVF listen queue overflows)")" \
    "$(calc "sprintf(\"%.1fx\", $served / $STAMPEDE_BASE_MS)") the time" "exactly 1 provider call" \
    "$([ "$calls" = 1 ] && [ "$ok" = "$CALLERS" ] && echo met || echo "**MISSED**: $calls calls, $ok ok")"
}

# credentials_series BACKEND TARGET_PCT: wrk at each connection count, service and
# baseline alternating; adds rows; sets SERIES_RPS16 (service at 16, for pgbench).
credentials_series() {
  local backend=$1 target=$2 c s_rps s_p50 s_p99 s_bad verdict ratio
  SERIES_RPS16=0
  log "warm-up ($backend and baseline)"
  run_wrk "warm-up $backend" "$SVC_URL" 16 2 >/dev/null
  run_wrk "warm-up baseline" "$BASE_URL" 16 2 >/dev/null
  for c in $CONNECTIONS; do
    run_wrk "$backend" "$SVC_URL" "$c" "$DURATION"
    s_rps=$W_RPS s_p50=$W_P50 s_p99=$W_P99 s_bad=$W_BAD
    [ "$c" = 16 ] && SERIES_RPS16=$s_rps
    run_wrk "baseline" "$BASE_URL" "$c" "$DURATION"
    ratio=$(calc "100 * $s_rps / $W_RPS")
    verdict=met
    if is "$ratio < $target"; then
      verdict="**MISSED**: $(pct "$s_rps" "$W_RPS") of baseline, needs $(calc "sprintf(\"%.1fx\", $target / $ratio)") the throughput"
    fi
    local tgt="≥ $target% of baseline req/s"
    if [ "$c" = 64 ] && [ "$backend" = SQLite ]; then
      tgt="$tgt, p99 < 5 ms"
      if is "$s_p99 >= 5000"; then
        [ "$verdict" = met ] && verdict="**MISSED**:" || verdict="$verdict;"
        verdict="$verdict p99 $(ms "$s_p99") ms is $(calc "sprintf(\"%.1fx\", $s_p99 / 5000)") the 5 ms target"
      fi
    fi
    [ "$s_bad" = 0 ] || verdict="$verdict (**$s_bad errors**)"
    row "$([ "$backend" = SQLite ] && echo 1 || echo 2). credentials, $backend" "$c connection(s)" \
      "$(wrk_cell "$s_rps" "$s_p50" "$s_p99" "$s_bad")" "$(wrk_cell "$W_RPS" "$W_P50" "$W_P99" "$W_BAD")" \
      "$(pct "$s_rps" "$W_RPS")" "$tgt" "$verdict"
  done
}

# ---------------------------------------------------------------------------- setup

if [ -z "${BENCH_NO_BUILD:-}" ]; then
  log "building (release)"
  cargo build --release --examples --bins 2>&1 | tail -3 >&2
fi
[ -x "$BIN" ] || die "$BIN is missing"
for tool in curl jq wrk; do
  if ! command -v "$tool" >/dev/null; then
    log "installing $tool"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$tool" >/dev/null
  fi
done
if [ -n "$PG_BASE" ]; then
  command -v pgbench >/dev/null && command -v psql >/dev/null || die "psql and pgbench are needed (or BENCH_POSTGRES=)"
  psql "$PG_BASE/postgres" -qAtc "select 1" >/dev/null || die "PostgreSQL does not answer at $PG_BASE"
fi

ENC_KEYS="k1:$(head -c 32 /dev/urandom | base64)"
ADMIN="obk_bench_$(head -c 24 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')"
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "work dir $WORK; load average $LOAD_BEFORE"
start_fake 0.0.0.0:0
log "fake token endpoint at $FAKE_URL"

# ------------------------------------------------- 1. credentials on SQLite, footprint

log "1. credentials on SQLite"
mkdir -p "$WORK/sqlite"
start_service sqlite "sqlite://$WORK/sqlite/broker.db"
READY_EMPTY_MS=$READY_MS
sleep 1
IDLE_RSS_KB=$(rss_kb "$SVC_PID")
log "  first start (empty database): ready in $READY_EMPTY_MS ms, idle RSS $(mb "$IDLE_RSS_KB") MB"
TARGETS=$WORK/targets-sqlite.txt
"$EX/bench_seed" api "$SVC_URL" "$ADMIN" "$FAKE_URL/token" "$TARGETS" \
  --orgs "$ORGS" --per-org "$PER_ORG" --global "$GLOBAL" 2>&1 | tee -a "$WORK/seed.log" >&2
SEEDED=$((ORGS * PER_ORG + GLOBAL))
read -r key org name < <(tail -1 "$TARGETS")
status=$(curl -s -o "$WORK/body.json" -w '%{http_code}' -H "Authorization: Bearer $key" \
  -H "X-Organization-Id: $org" "$SVC_URL/api/oauth/credentials/$name")
[ "$status" = 200 ] && jq -e .access_token "$WORK/body.json" >/dev/null ||
  die "credentials read: HTTP $status $(cat "$WORK/body.json")"
BODY_BYTES=$(wc -c <"$WORK/body.json")
stop "$SVC_PID"
start_service sqlite "sqlite://$WORK/sqlite/broker.db"
READY_SEEDED_MS=$READY_MS
sleep 1
SEEDED_RSS_KB=$(rss_kb "$SVC_PID")
log "  restart ($SEEDED connections): ready in $READY_SEEDED_MS ms, idle RSS $(mb "$SEEDED_RSS_KB") MB"
start_baseline "$WORK/body.json"
sleep 1
BASE_RSS_KB=$(rss_kb "$BASE_PID")
log "  baseline ready in $BASE_READY_MS ms, idle RSS $(mb "$BASE_RSS_KB") MB, body $BODY_BYTES bytes"

credentials_series SQLite 40
SQLITE_RPS16=$SERIES_RPS16
BENCH_WORKFLOW_ID=bench-workflow run_wrk "SQLite + X-Workflow-Id" "$SVC_URL" 16 "$DURATION"
WF_RPS=$W_RPS WF_P50=$W_P50 WF_P99=$W_P99 WF_BAD=$W_BAD
run_wrk "baseline" "$BASE_URL" 16 "$DURATION"
row "1. credentials, SQLite" "16 connections, with X-Workflow-Id (no dependency registered)" \
  "$(wrk_cell "$WF_RPS" "$WF_P50" "$WF_P99" "$WF_BAD")" "$(wrk_cell "$W_RPS" "$W_P50" "$W_P99" "$W_BAD")" \
  "$(pct "$WF_RPS" "$W_RPS") ($(pct "$WF_RPS" "$SQLITE_RPS16") of the same call without the header)" "—" "informative"

log "3. stampede"
STAMPEDE_BASE_OVF=$(listen_overflows)
out=$("$EX/bench_stampede" "$BASE_URL/api/oauth/credentials/x" x x --callers "$CALLERS")
STAMPEDE_BASE_OVF=$(($(listen_overflows) - STAMPEDE_BASE_OVF))
echo "stampede baseline: $out" >>"$WORK/stampede.log"
STAMPEDE_BASE_MS=$(jq .all_served_ms <<<"$out")
log "  stampede baseline: $out"
stampede SQLite
stop "$SVC_PID"

# ------------------------------------------------------- 2. credentials on PostgreSQL

if [ -n "$PG_BASE" ]; then
  log "2. credentials on PostgreSQL"
  PG_DB=oauth_broker_bench_$$
  psql "$PG_BASE/postgres" -qAtc "create database $PG_DB" >/dev/null
  start_service postgres "$PG_BASE/$PG_DB"
  TARGETS=$WORK/targets-postgres.txt
  "$EX/bench_seed" api "$SVC_URL" "$ADMIN" "$FAKE_URL/token" "$TARGETS" \
    --orgs "$ORGS" --per-org "$PER_ORG" --global "$GLOBAL" 2>&1 | tee -a "$WORK/seed.log" >&2
  psql "$PG_BASE/$PG_DB" -qAtc "vacuum analyze" >/dev/null
  credentials_series PostgreSQL 25
  PG_RPS16=$SERIES_RPS16

  # pgbench: the service's lookup (org's own connection, else GLOBAL's), prepared, on a
  # copy of the seeded table with the same indexes; half the names only exist in GLOBAL.
  log "  pgbench"
  # The service's column list (src/store/sql.rs, connection_columns!), else every column.
  cols=$(sed -n '/macro_rules! connection_columns/,/};/p' src/store/sql.rs 2>/dev/null |
    tr '\n' ' ' | sed -E 's/^[^"]*"//; s/"[^"]*$//; s/\\//g' | tr -s ' ')
  [[ $cols == id,* ]] || cols='*'
  psql "$PG_BASE/$PG_DB" -qAt >/dev/null <<SQL
create table pgbench_connections (like connections including all);
insert into pgbench_connections select * from connections;
vacuum analyze pgbench_connections;
SQL
  {
    echo "\\set i random(0, $((ORGS - 1)))"
    echo "\\set j random(0, $((PER_ORG - 1)))"
    echo "select $cols from pgbench_connections where name = 'o' || :j::text and (org_id = 'org' || :i::text or org_id = 'GLOBAL') order by case when org_id = 'org' || :i::text then 0 else 1 end limit 1;"
  } >"$WORK/own.sql"
  {
    echo "\\set i random(0, $((ORGS - 1)))"
    echo "\\set k random(0, $((GLOBAL - 1)))"
    echo "select $cols from pgbench_connections where name = 'g' || :k::text and (org_id = 'org' || :i::text or org_id = 'GLOBAL') order by case when org_id = 'org' || :i::text then 0 else 1 end limit 1;"
  } >"$WORK/global.sql"
  mkdir -p "$WORK/pgbench"
  (cd "$WORK/pgbench" && pgbench -n -M prepared -c 16 -j "$WRK_THREADS" -T "$DURATION" -l \
    -f "$WORK/own.sql@1" -f "$WORK/global.sql@1" "$PG_BASE/$PG_DB") >"$WORK/pgbench.out" 2>&1 ||
    die "pgbench: $(cat "$WORK/pgbench.out")"
  PGB_TPS=$(sed -nE 's/^tps = ([0-9.]+) .*without initial connection time.*/\1/p' "$WORK/pgbench.out")
  PGB_FAILED=$(sed -nE 's/^number of failed transactions: ([0-9]+).*/\1/p' "$WORK/pgbench.out")
  read -r PGB_P50 PGB_P99 < <(cat "$WORK"/pgbench/pgbench_log.* | awk '{print $3}' | sort -n |
    awk '{ a[NR] = $1 } END { p50 = a[int(NR * 0.50) > 0 ? int(NR * 0.50) : 1]; p99 = a[int(NR * 0.99) > 0 ? int(NR * 0.99) : 1]; print p50, p99 }')
  rm -rf "$WORK/pgbench"
  log "  pgbench: $(group "$PGB_TPS") tps, p50 $(ms "$PGB_P50") ms, p99 $(ms "$PGB_P99") ms, failed ${PGB_FAILED:-0}"
  row "2. credentials, PostgreSQL" "16 connections, beside pgbench" \
    "$(group "$PG_RPS16") req/s (from the row above)" \
    "pgbench, same lookup query, prepared, -c 16: $(group "$PGB_TPS") queries/s, p50 $(ms "$PGB_P50") ms, p99 $(ms "$PGB_P99") ms" \
    "$(pct "$PG_RPS16" "$PGB_TPS")" "—" "informative: the database's own point-read ceiling here"
  stampede PostgreSQL
  stop "$SVC_PID"
  psql "$PG_BASE/postgres" -qAtc "drop database if exists $PG_DB with (force)" >/dev/null
  PG_DB=""
else
  note "PostgreSQL was skipped (BENCH_POSTGRES is empty)."
fi

# ------------------------------------------------------------------------ 4. refresher

[ -z "$REFRESH_SIZES" ] || {
  log "4. refresher"
  run_wrk "fake token endpoint" "$FAKE_URL/token" 16 5 "$ROOT/bench/token.lua"
  FAKE_RPS=$W_RPS
}
declare -A R_SECS R_RATE R_HWM
for n in $REFRESH_SIZES; do
  dir=$WORK/refresh-$n
  mkdir -p "$dir"
  db="sqlite://$dir/broker.db"
  t0=$(now_ns)
  OAUTH_BROKER_ENCRYPTION_KEYS="$ENC_KEYS" "$EX/bench_seed" direct "$db" "$FAKE_URL/token" "$n" \
    --orgs "$ORGS" --hosts 8 2>&1 | tee -a "$WORK/seed.log" >&2
  seed_secs=$(calc "sprintf(\"%.1f\", ($(now_ns) - $t0) / 1e9)")
  curl -sf -X POST "$FAKE_URL/reset" >/dev/null
  start_service "refresh-$n" "$db" OAUTH_BROKER_REFRESHER_ENABLED=true \
    OAUTH_BROKER_REFRESH_STARTUP_DELAY_SECONDS=86400 OAUTH_BROKER_REFRESH_CRON="0 0 0 1 1 *"
  status=$(admin_curl -o /dev/null -w '%{http_code}' -X POST "$SVC_URL/api/oauth/refresh/run")
  [ "$status" = 202 ] || die "POST /refresh/run: HTTP $status"
  t0=$(now_ns)
  deadline=$(($(date +%s) + REFRESH_TIMEOUT))
  finished=""
  while :; do
    st=$(admin_curl "$SVC_URL/api/oauth/refresh/status")
    if [ "$(jq -r '.last_run.finished_at // empty' <<<"$st")" != "" ]; then finished=1; break; fi
    [ "$(date +%s)" -lt "$deadline" ] || break
    alive "$SVC_PID" || die "the service died during the refresher run"
    sleep 0.2
  done
  wall=$(calc "($(now_ns) - $t0) / 1e9")
  hwm=$(hwm_kb "$SVC_PID")
  calls=$(curl -sf "$FAKE_URL/calls" | jq .total)
  if [ -n "$finished" ]; then
    run=$(jq -c .last_run <<<"$st")
    started=$(date -d "$(jq -r .started_at <<<"$run")" +%s%N)
    ended=$(date -d "$(jq -r .finished_at <<<"$run")" +%s%N)
    secs=$(calc "($ended - $started) / 1e9")
    refreshed=$(jq .refreshed <<<"$run")
    failed=$(jq .failed <<<"$run")
    skipped=$(jq .skipped <<<"$run")
  else
    run=$(jq -c .running <<<"$st")
    secs=$wall
    refreshed=$(jq '.refreshed // 0' <<<"$run")
    failed=$(jq '.failed // 0' <<<"$run")
    skipped=$(jq '.skipped // 0' <<<"$run")
  fi
  echo "refresh $n: $st" >>"$WORK/refresh.log"
  rate=$(calc "$refreshed / $secs")
  R_SECS[$n]=$secs R_RATE[$n]=$rate R_HWM[$n]=$hwm
  log "  $n due: $([ -n "$finished" ] || echo 'NOT FINISHED after ')$(calc "sprintf(\"%.1f\", $secs)") s, refreshed $refreshed, failed $failed, skipped $skipped, provider calls $calls, $(group "$rate")/s, peak RSS $(mb "$hwm") MB (seeded in $seed_secs s)"
  verdict="—"
  if [ "$n" = 10000 ]; then
    verdict=met
    if [ -z "$finished" ] || is "$secs >= 30"; then
      verdict="**MISSED**: $(calc "sprintf(\"%.1f\", $secs)") s is $(calc "sprintf(\"%.1fx\", $secs / 30)") the 30 s target"
    fi
    if is "$hwm >= 150 * 1024"; then
      [ "$verdict" = met ] && verdict="**MISSED**:" || verdict="$verdict;"
      verdict="$verdict peak RSS $(mb "$hwm") MB over 150 MB"
    fi
  elif is "$hwm >= 150 * 1024"; then
    verdict="peak RSS $(mb "$hwm") MB over 150 MB"
  else
    verdict="RSS under 150 MB"
  fi
  [ "$failed" = 0 ] || verdict="$verdict (**$failed failed**)"
  [ -n "$finished" ] || verdict="$verdict (**did not finish within ${REFRESH_TIMEOUT} s**)"
  row "4. refresher" "$(group "$n") due connections, 8 provider hosts, concurrency 64 (8 per host)" \
    "$([ -n "$finished" ] || echo '> ')$(calc "sprintf(\"%.1f\", $secs)") s, $(group "$refreshed") refreshed ($failed failed, $skipped skipped), **$(group "$rate")/s**, peak RSS $(mb "$hwm") MB, $calls provider calls" \
    "fake token endpoint alone, wrk -c 16: $(group "$FAKE_RPS") grants/s" \
    "$(pct "$rate" "$FAKE_RPS") of the provider ceiling" \
    "$([ "$n" = 10000 ] && echo '< 30 s, peak RSS < 150 MB' || echo 'peak RSS < 150 MB')" "$verdict"
  stop "$SVC_PID"
done
sizes=($REFRESH_SIZES)
if [ "${#sizes[@]}" -ge 2 ]; then
  a=${sizes[0]} b=${sizes[${#sizes[@]} - 1]}
  ratio=$(calc "${R_SECS[$b]} / ${R_SECS[$a]}")
  expected=$(calc "$b / $a")
  row "4. refresher" "time ratio $(group "$b") / $(group "$a")" "$(calc "sprintf(\"%.1f\", $ratio)")" \
    "linear: $(calc "sprintf(\"%.0f\", $expected)")" "$(calc "sprintf(\"%.2f\", $ratio / $expected)") of linear" \
    "near $(calc "sprintf(\"%.0f\", $expected)")" \
    "$(calc "($ratio / $expected) <= 1.3 && ($ratio / $expected) >= 0.7 ? \"met\" : \"**MISSED**: not linear\"")"
fi

# ------------------------------------------------------------------------ 5. footprint

BIN_BYTES=$(stat -c %s "$BIN")
BASE_BIN_BYTES=$(stat -c %s "$EX/baseline_server")
row "5. footprint" "idle RSS after start" "$(mb "$IDLE_RSS_KB") MB (empty database); $(mb "$SEEDED_RSS_KB") MB ($(group "$SEEDED") connections)" \
  "baseline server: $(mb "$BASE_RSS_KB") MB" "$(calc "sprintf(\"%.1fx\", $IDLE_RSS_KB / $BASE_RSS_KB)")" "—" "informative"
row "5. footprint" "exec to /readyz 200" "$READY_EMPTY_MS ms (new database: create, migrate); $READY_SEEDED_MS ms ($(group "$SEEDED") connections)" \
  "baseline server, exec to first 200: $BASE_READY_MS ms" "$(calc "sprintf(\"%.1fx\", $READY_SEEDED_MS / ($BASE_READY_MS > 0 ? $BASE_READY_MS : 1))")" "—" "informative"
row "5. footprint" "release binary (stripped)" "$(calc "sprintf(\"%.1f\", $BIN_BYTES / 1048576)") MiB" \
  "baseline server: $(calc "sprintf(\"%.1f\", $BASE_BIN_BYTES / 1048576)") MiB" "$(calc "sprintf(\"%.1fx\", $BIN_BYTES / $BASE_BIN_BYTES)")" "—" "informative"
if [ -n "${BENCH_DOCKER:-}" ] && docker info >/dev/null 2>&1; then
  log "5. docker build"
  docker build -q -t oauth-broker:bench . >/dev/null
  row "5. footprint" "Docker image" "$(docker image inspect oauth-broker:bench --format '{{.Size}}' | awk '{ printf "%.1f MiB", $1 / 1048576 }')" "—" "—" "—" "informative"
else
  note "Docker image size: not measured ($( docker info >/dev/null 2>&1 && echo 'set BENCH_DOCKER=1' || echo 'no Docker daemon on this machine'))."
fi

# ------------------------------------------------------------------------- the table

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
ELAPSED=$(($(date +%s) - SCRIPT_START))
CPU=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)
COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
DIRTY=$(git status --porcelain -- src migrations Cargo.toml 2>/dev/null | grep -q . && echo " (with uncommitted changes in src/)" || true)
{
  echo "Run $(date -u +%Y-%m-%dT%H:%M:%SZ), commit $COMMIT$DIRTY, \`$COMMAND\`, $ELAPSED s in all."
  [ "$BIN" = "$ROOT/target/release/oauth-broker" ] || echo "Binary: $BIN."
  [ -z "${BENCH_SERVICE_ENV:-}" ] || echo "Service settings: \`$BENCH_SERVICE_ENV\`."

  echo
  echo "Machine: $CPU; \`nproc\` = $NPROC; memory $(free -g | awk '/^Mem:/ {print $2}') GiB (\`free -g\`);" \
    "load average $LOAD_BEFORE before, $LOAD_AFTER after. HTTP workers: $WORKERS (service and baseline);" \
    "wrk $WRK_THREADS thread(s), ${DURATION} s per point, on the same cores as the servers."
  echo
  echo "Data: $(group "$SEEDED") connections ($(group "$GLOBAL") in GLOBAL, $PER_ORG in each of $ORGS orgs), reads spread at random" \
    "over all of them with each org's workflow key, half served by the GLOBAL fallback; credentials body $BODY_BYTES bytes."
  echo
  echo "| # | measurement | oauth-broker | baseline (same run) | ratio | target | verdict |"
  echo "|---|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
  for n in "${NOTES[@]}"; do echo; echo "$n"; done
} >"$WORK/table.md"
echo
cat "$WORK/table.md"

if [ -n "$OUTPUT" ]; then
  begin='<!-- bench/run.sh: generated from here -->'
  end='<!-- bench/run.sh: generated up to here -->'
  if [ ! -f "$OUTPUT" ]; then
    printf '# Benchmarks\n\nProduced by `bench/run.sh` (see the top of that script for what it measures and how).\n\n%s\n%s\n' "$begin" "$end" >"$OUTPUT"
  fi
  grep -qF "$begin" "$OUTPUT" || printf '\n%s\n%s\n' "$begin" "$end" >>"$OUTPUT"
  awk -v begin="$begin" -v end="$end" -v table="$WORK/table.md" '
    $0 == begin { print; while ((getline line < table) > 0) print line; skip = 1; next }
    $0 == end { skip = 0 }
    !skip { print }' "$OUTPUT" >"$WORK/out.md"
  cp "$WORK/out.md" "$OUTPUT"
  log "wrote $OUTPUT"
fi
