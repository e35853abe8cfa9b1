#!/usr/bin/env bash
# bench/run.sh — sluice vs HAProxy vs nginx, side by side, on this machine
# (loopback only), with the shared harness in ../shared/bench used as it is.
#
# Run from the repository root:   bench/run.sh
# Environment:
#   ROUNDS [3]       interleaved rounds per wrk/hey scenario
#   DURATION [10]    seconds per measured wrk/hey run
#   RATE [4000]      req/s offered in total in the fixed-rate run of (a): hey -c 50 -q RATE/50
#                    (hey's -q is per worker); a target that achieves less than 95 % of it in a
#                    round is named in the summary, and its ratios are marked as unequal loads
#   QUICK=1          smoke run: ROUNDS=1, DURATION=5, IDLE_HOLD=5
#   IDLE_N [10000]   idle keep-alive client connections (scenario d)
#   IDLE_HOLD [10]   seconds the idle connections are held
#   SHARED [../shared/bench]   the shared harness
#   CHART [docs/benchmarks.png]  where the PNG goes
#   PROFILE=1        afterwards, per target but nginx1: `perf stat` (system calls by kind, context switches,
#                    CPU per request) over a wrk c=50 run of PROFILE_SECS [8] s, then
#                    `perf record -e cpu-clock -g` under the same load (bench/perfsplit.awk)
#   H1=1             also run sluice-h1: the same config as sluice with `engine: h1` (the
#                    goroutine engine; sluice's default is `engine: loop`, its HTTP/1.1 engine
#                    on event loops, one per CPU), 127.0.0.1:8094, admin :19194
#   ONE_LOOP=1       also run sluice-1loop: the same config with `event_loops: 1` (one loop,
#                    as haproxy1 has one thread), 127.0.0.1:8095, admin :19195
#   HAP2=1           also run haproxy2 (HAProxy nbthread 2, from the shared harness, 127.0.0.1:8082),
#                    beside which sluice's default (one loop per CPU, 2 here) is like for like;
#                    the summary adds sluice ÷ haproxy2 round by round
#   BASELINE []      a git revision (e.g. 0b8fec8): also build sluice at that
#                    revision (git archive into /tmp/bench/base, binary
#                    /tmp/bench/bin/sluice-base) and run it as the extra target
#                    sluice-base (127.0.0.1:8092, admin :19192, the same config
#                    as sluice) in every scenario, interleaved with the others
# Targets, interleaved by ../shared/bench/run.sh: haproxy1, nginx1, sluice (its
# defaults: the HTTP/1.1 engine on event loops) and sluice-std (the same config with
# `engine: std`, the net/http codec), so the engine is compared with both;
# with BASELINE also sluice-base (that revision's sluice, default engine).
# Scenarios:
#   a) 100 B responses: wrk (saturated) at c=50 and c=256, then hey at a fixed RATE req/s
#      offered over 50 connections: every target under the same load, so CPU per request and
#      p99 compare equal work
#   b) 64 KiB responses, c=50
#   c) c=50 while backend 127.0.0.1:9002 is killed ~2 s into each run and
#      restarted 2 s later (errors per target)
#   d) IDLE_N idle keep-alive clients per proxy (peak RSS); HAProxy is started again for it with
#      maxconn raised from the shared config's 8000 as far as the descriptor limit allows
# Output: /tmp/bench/last/ (summary.md, per-scenario runs.csv, raw/), the chart.
# Everything it starts is stopped at the end and on failure.
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-10}; IDLE_N=${IDLE_N:-10000}; IDLE_HOLD=${IDLE_HOLD:-10}
RATE=${RATE:-4000}; RATE_CONNS=50
[[ $RATE =~ ^[1-9][0-9]*$ ]] || { echo "RATE=$RATE: give the offered load as a whole number of req/s, e.g. RATE=4000" >&2; exit 2; }
PROFILE=${PROFILE:-0}; PROFILE_SECS=${PROFILE_SECS:-8}
if [[ ${QUICK:-0} == 1 ]]; then ROUNDS=1; DURATION=5; IDLE_HOLD=5; fi
CHART=${CHART:-$ROOT/docs/benchmarks.png}
FAIL_AT=${FAIL_AT:-2}; FAIL_DOWN=${FAIL_DOWN:-2}
BASELINE=${BASELINE:-}; BASE_SRC=/tmp/bench/base; BASE_REV=""
export RUN_DIR=/tmp/bench/run BIN_DIR=/tmp/bench/bin
LAST=/tmp/bench/last
NAMES=(haproxy1 nginx1 sluice sluice-std)
TARGETS=(haproxy1=http://127.0.0.1:8081/ nginx1=http://127.0.0.1:8083/ sluice=http://127.0.0.1:8090/ sluice-std=http://127.0.0.1:8091/)
ADDRS=(127.0.0.1:8081 127.0.0.1:8083 127.0.0.1:8090 127.0.0.1:8091)
STARTED="sluice sluice-std haproxy1 nginx1 backend-9001 backend-9002 backend-9003"
STOP_MSG="bench: stopped sluice, peers and backends"
if [[ ${H1:-0} == 1 ]]; then
  NAMES+=(sluice-h1); TARGETS+=(sluice-h1=http://127.0.0.1:8094/); ADDRS+=(127.0.0.1:8094)
  STARTED="sluice-h1 $STARTED"
fi
if [[ ${HAP2:-0} == 1 ]]; then
  NAMES+=(haproxy2); TARGETS+=(haproxy2=http://127.0.0.1:8082/); ADDRS+=(127.0.0.1:8082)
  STARTED="haproxy2 $STARTED"
fi
if [[ ${ONE_LOOP:-0} == 1 ]]; then
  NAMES+=(sluice-1loop); TARGETS+=(sluice-1loop=http://127.0.0.1:8095/); ADDRS+=(127.0.0.1:8095)
  STARTED="sluice-1loop $STARTED"
fi
if [[ -n $BASELINE ]]; then
  BASE_REV=$(commit_of BASELINE "$BASELINE")
  # last, so that the chart keeps its colours for the other four
  NAMES+=(sluice-base); TARGETS+=(sluice-base=http://127.0.0.1:8092/); ADDRS+=(127.0.0.1:8092)
  STARTED="sluice-base $STARTED"
fi

# ---- 0. prerequisites -------------------------------------------------------
require haproxy nginx wrk hey curl
[[ $PROFILE == 1 ]] && require perf:linux-perf
ports_free "is another benchmark running? (../shared/bench/stop-peers.sh)" \
  9001 9002 9003 8081 8083 8090 8091 8092 8094 8095 19190 19191 19192 19194 19195
[[ -n $BASE_REV ]] && CLEANUP_RM=("$BASE_SRC")
stop_on_exit

rm -rf "$LAST"; mkdir -p "$LAST" "$BIN_DIR" "$RUN_DIR"

# ---- 1. build, start, check -------------------------------------------------
log "building sluice and the bench tools"
build_sluice -o "$BIN_DIR/sluice" ./cmd/sluice
HEAD_REV=$(worktree_rev cmd internal go.mod go.sum)
go build -o "$BIN_DIR/idleclients" ./bench/cmd/idleclients
go build -o "$BIN_DIR/chart" ./bench/cmd/chart
if [[ -n $BASE_REV ]]; then
  log "building sluice-base at $BASELINE (${BASE_REV:0:12}) from git archive in $BASE_SRC"
  build_sluice_at "$BASE_REV" "$BASE_SRC" "$BIN_DIR/sluice-base"
fi

cat >"$LAST/sluice.yaml" <<'EOF'
listeners:
  - name: bench
    address: "127.0.0.1:8090"
    pool: web
pools:
  - name: web
    balance: round_robin
    backends:
      - {address: "http://127.0.0.1:9001"}
      - {address: "http://127.0.0.1:9002"}
      - {address: "http://127.0.0.1:9003"}
admin:
  address: "127.0.0.1:19190"
access_log: {format: off}
log: {level: warn}
EOF
sed -e 's/127.0.0.1:8090/127.0.0.1:8091/' -e 's/127.0.0.1:19190/127.0.0.1:19191/' \
  -e 's/^    pool: web$/    pool: web\n    engine: std/' "$LAST/sluice.yaml" >"$LAST/sluice-std.yaml"
"$BIN_DIR/sluice" validate -config "$LAST/sluice.yaml"
"$BIN_DIR/sluice" validate -config "$LAST/sluice-std.yaml"
grep -q 'engine: std' "$LAST/sluice-std.yaml"
sed -e 's/127.0.0.1:8090/127.0.0.1:8094/' -e 's/127.0.0.1:19190/127.0.0.1:19194/' \
  -e 's/^    pool: web$/    pool: web\n    engine: h1/' "$LAST/sluice.yaml" >"$LAST/sluice-h1.yaml"
"$BIN_DIR/sluice" validate -config "$LAST/sluice-h1.yaml"
grep -q 'engine: h1' "$LAST/sluice-h1.yaml"
sed -e 's/127.0.0.1:8090/127.0.0.1:8095/' -e 's/127.0.0.1:19190/127.0.0.1:19195/' "$LAST/sluice.yaml" >"$LAST/sluice-1loop.yaml"
echo "event_loops: 1" >>"$LAST/sluice-1loop.yaml"
"$BIN_DIR/sluice" validate -config "$LAST/sluice-1loop.yaml"
if [[ -n $BASE_REV ]]; then
  sed -e 's/127.0.0.1:8090/127.0.0.1:8092/' -e 's/127.0.0.1:19190/127.0.0.1:19192/' "$LAST/sluice.yaml" >"$LAST/sluice-base.yaml"
  "$BIN_DIR/sluice-base" validate -config "$LAST/sluice-base.yaml"
fi

log "starting backends + haproxy1 + nginx1 (unpinned) and sluice"
PEERS="haproxy1 nginx1$([[ ${HAP2:-0} == 1 ]] && echo " haproxy2")" "$SHARED/start-peers.sh" unpinned
"$SHARED/start-one.sh" sluice -- "$BIN_DIR/sluice" run -config "$LAST/sluice.yaml"
"$SHARED/start-one.sh" sluice-std -- "$BIN_DIR/sluice" run -config "$LAST/sluice-std.yaml"
[[ ${H1:-0} == 1 ]] && "$SHARED/start-one.sh" sluice-h1 -- "$BIN_DIR/sluice" run -config "$LAST/sluice-h1.yaml"
[[ ${ONE_LOOP:-0} == 1 ]] && "$SHARED/start-one.sh" sluice-1loop -- "$BIN_DIR/sluice" run -config "$LAST/sluice-1loop.yaml"
[[ -n $BASE_REV ]] && "$SHARED/start-one.sh" sluice-base -- "$BIN_DIR/sluice-base" run -config "$LAST/sluice-base.yaml"
sleep 0.5
urls=(); for a in "${ADDRS[@]}"; do urls+=("http://$a/"); done
for a in "${ADDRS[@]}"; do urls+=("http://$a/kb/64"); done
"$SHARED/check.sh" "${urls[@]}"

# ---- RSS sampling (rss_tree: bench/lib.sh) ---------------------------------------
# background sampler for the wrk scenarios: "epoch target kB" every 0.5 s
sampler() {
  while :; do
    now=$(date +%s.%N)
    for n in "${NAMES[@]}"; do echo "$now $n $(rss_tree "$(pidof_t "$n")")"; done
    sleep 0.5
  done >>"$LAST/rss-samples.txt"
}
sampler & SAMPLER=$!
: >"$LAST/rss.tsv"
peak_rss() { # $1=label $2=conns $3=t0 $4=t1 -> rss.tsv lines
  awk -v l="$1" -v c="$2" -v t0="$3" -v t1="$4" '$1 >= t0 && $1 <= t1 && $3 > m[$2] { m[$2] = $3 }
    END { for (n in m) printf "rss\t%s\t%s\t%s\t%s\n", l, c, n, m[n] }' "$LAST/rss-samples.txt" >>"$LAST/rss.tsv"
}
load_scenario() { # $1=label $2=conns $3=out-dir, extra env (URL_PATH, TOOL, RATE) from the caller
  local t0 t1; t0=$(date +%s.%N)
  LABEL=$1 CONNS=$2 ROUNDS=$ROUNDS DURATION=$DURATION OUT=$LAST/$3 "$SHARED/run.sh" "${TARGETS[@]}"
  t1=$(date +%s.%N); peak_rss "$1" "$2" "$t0" "$t1"
}

# ---- 2. scenarios ---------------------------------------------------------
STARTED_AT=$(date -u +%FT%TZ); LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "(a) 100 B responses, c=50"; load_scenario small 50 small-c50
log "(a) 100 B responses, c=256"; load_scenario small 256 small-c256
log "(a) 100 B responses, $RATE req/s offered over $RATE_CONNS connections (hey)"
TOOL=hey RATE=$RATE load_scenario rate "$RATE_CONNS" rate-c$RATE_CONNS
log "(b) 64 KiB responses, c=50"; URL_PATH=/kb/64 load_scenario kb64 50 kb64-c50

log "(c) backend failure: 9002 killed ${FAIL_AT}s into each c=50 run, restarted ${FAIL_DOWN}s later"
mkdir -p "$LAST/fail"
t0=$(date +%s.%N)
for r in $(seq "$ROUNDS"); do
  for i in "${!NAMES[@]}"; do
    n=${NAMES[$i]}
    (sleep "$FAIL_AT"; "$SHARED/stop-peers.sh" backend-9002
     sleep "$FAIL_DOWN"; "$SHARED/start-one.sh" backend-9002 -- "$BIN_DIR/backend" -addr 127.0.0.1:9002) \
      >"$LAST/fail/killer-r$r-$n.log" 2>&1 &
    killer=$!; BGPIDS+=("$killer")
    LABEL=fail CONNS=50 ROUNDS=1 DURATION=$DURATION WARMUP=0 OUT=$LAST/fail/r$r-$n "$SHARED/run.sh" "${TARGETS[$i]}" |
      grep -E '^  c=' || true
    wait "$killer" || { echo "backend restart failed, see $LAST/fail/killer-r$r-$n.log" >&2; exit 1; }
    for _ in $(seq 50); do curl -fs -m 1 -o /dev/null http://127.0.0.1:9002/ && break; sleep 0.1; done
    curl -fs -m 1 -o /dev/null http://127.0.0.1:9002/ || { echo "backend 9002 did not come back" >&2; exit 1; }
    sleep 1
  done
done
# merge, giving each file its round number so that summarize.awk pairs rounds
# (the directory is r<round>-<target>; the file name runs.csv must not be matched as "r...")
awk -F, -v OFS=, 'FNR == 1 { if (NR == 1) print; n = split(FILENAME, d, "/"); r = d[n - 1]; sub(/^r/, "", r); sub(/-.*/, "", r); next } { $3 = r; print }' \
  "$LAST"/fail/r*/runs.csv >"$LAST/fail/runs.csv"
peak_rss fail 50 "$t0" "$(date +%s.%N)"
awk -F, -v base=direct -v ref=haproxy1 -f "$SHARED/summarize.awk" "$LAST/fail/runs.csv" | tee "$LAST/fail/summary.md"

stop_sampler

log "(d) $IDLE_N idle keep-alive clients, held ${IDLE_HOLD}s"
# The shared config caps HAProxy at maxconn 8000: for the idle clients each HAProxy is started
# again with maxconn raised as far as the descriptor limit allows (idle_fds), as bench/idle.sh does
idle_fds
haproxy_cfg_at 9001 9002 9003 "$HAPROXY_MAXCONN" "$LAST/haproxy-idle.cfg"
for n in "${NAMES[@]}"; do
  [[ $n =~ ^haproxy([12])$ ]] || continue
  th=${BASH_REMATCH[1]}; pid=$(pidof_t "$n"); kill "$pid"
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  NBTHREAD=$th HAPROXY_PORT=$((8080 + th)) \
    "$SHARED/start-one.sh" "$n" -- haproxy -db -f "$LAST/haproxy-idle.cfg"
done
log "HAProxy maxconn $HAPROXY_MAXCONN for the idle clients (descriptor limit $(ulimit -n))"
: >"$LAST/idle.tsv"
for i in "${!NAMES[@]}"; do
  n=${NAMES[$i]}
  idle_clients "$n" "${ADDRS[$i]}"
  printf 'idle\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$IDLE_N" "$n" "$IDLE_BEFORE" "$IDLE_PEAK" "${IDLE_OK:-0}" "${IDLE_FAILED:-$IDLE_N}" "${IDLE_ALIVE:-0}" | tee -a "$LAST/idle.tsv"
  cat "$LAST/idle-$n.txt"
  sleep 2
done

if [[ $PROFILE == 1 ]]; then
  log "(e) profiles: perf stat and perf record of each target under wrk c=50"
  profile_begin
  perfstat_begin
  for i in "${!NAMES[@]}"; do
    # nginx serves from a worker process that its PID file does not name: left out
    [[ ${NAMES[$i]} == nginx1 ]] || profile_target "${NAMES[$i]}" "${ADDRS[$i]}"
  done
fi

# ---- 3. summary -------------------------------------------------------------
log "summary"
# the load scenarios in the order of the tables (the failure run last)
SUMMARIES=(); CSVS=()
for d in small-c50 small-c256 "rate-c$RATE_CONNS" kb64-c50 fail; do SUMMARIES+=("$LAST/$d/summary.md"); CSVS+=("$LAST/$d/runs.csv"); done
{
  echo "# sluice benchmark — $(date -u +%FT%TZ)"
  echo
  echo "\`bench/run.sh\` with ROUNDS=$ROUNDS DURATION=${DURATION}s RATE=$RATE IDLE_N=$IDLE_N IDLE_HOLD=${IDLE_HOLD}s$([[ ${QUICK:-0} == 1 ]] && echo " (QUICK=1)"); $(machine); $(haproxy_version), $(nginx -v 2>&1 | sed 's/.*nginx\//nginx /'), $(go_version)."
  echo
  echo "Measured from $STARTED_AT to $(date -u +%FT%TZ); 1-, 5- and 15-minute load $LOAD_START at the start, $(cut -d' ' -f1-3 /proc/loadavg) at the end (this benchmark included)."
  if [[ -n $BASE_REV ]]; then
    echo
    echo "sluice = $HEAD_REV (the working tree), sluice-base = BASELINE=$BASELINE (${BASE_REV:0:12}), the same config and engine."
  fi
  echo
  awk -v ref=haproxy1 -v rate="$RATE" -v chart="$LAST/chart.tsv" -f "$ROOT/bench/stats.awk" -f "$ROOT/bench/combine.awk" \
    "${SUMMARIES[@]}" "$LAST/rss.tsv" "$LAST/idle.tsv"
  echo
  echo "Per round against haproxy1 (bench/rounds.awk): requests per proxy CPU-second and p99 as ratios to haproxy1 in the same round$([[ -n $BASE_REV ]] && echo ", and requests per CPU-second to sluice-base's"), then sluice ÷ haproxy1 round by round; median, min–max and spread = (max−min)/median over the rounds; the fixed rate's achieved req/s beside the offered $RATE:"
  echo
  awk -F, -v ref=haproxy1 -v tgt=sluice -v eng="${BASE_REV:+sluice-base}" -v rate="$RATE" \
    -f "$ROOT/bench/stats.awk" -f "$ROOT/bench/rounds.awk" "${CSVS[@]}"
  echo
  if [[ ${ONE_LOOP:-0} == 1 ]]; then
    echo "One thread each: sluice-1loop (\`event_loops: 1\`) ÷ haproxy1, round by round:"
    echo
    awk -F, -v ref=haproxy1 -v tgt=sluice-1loop -v rate="$RATE" -v pairs=1 \
      -f "$ROOT/bench/stats.awk" -f "$ROOT/bench/rounds.awk" "${CSVS[@]}"
    echo
  fi
  if [[ ${HAP2:-0} == 1 ]]; then
    echo "One thread per CPU each: sluice (its default, one loop per CPU) ÷ haproxy2 (\`nbthread 2\`), round by round:"
    echo
    awk -F, -v ref=haproxy2 -v tgt=sluice -v rate="$RATE" -v pairs=1 \
      -f "$ROOT/bench/stats.awk" -f "$ROOT/bench/rounds.awk" "${CSVS[@]}"
    echo
  fi
  if [[ -s $LAST/perf/stat.md ]]; then
    echo "System calls and context switches per request (perf stat on the proxy over a ${PROFILE_SECS} s wrk c=50 run, one target after another):"
    echo
    cat "$LAST/perf/stat.md"
    echo
    echo "Where each proxy's CPU goes (perf record -e cpu-clock, self time, % of the process's samples; bench/perfsplit.awk):"
    echo
    cat "$LAST/perf/split.md"
    echo
  fi
  echo "<details><summary>summarize.awk tables (shared harness)</summary>"
  echo
  awk -F, -v base=direct -v ref=haproxy1 -f "$SHARED/summarize.awk" "${CSVS[@]}"
  echo
  echo "CPU µs per request (cpusplit.awk):"
  echo
  awk -F, -f "$SHARED/cpusplit.awk" "${CSVS[@]:0:4}"
  echo
  echo "</details>"
} >"$LAST/summary.md"
echo
cat "$LAST/summary.md"

"$BIN_DIR/chart" -in "$LAST/chart.tsv" -out "$CHART" \
  -title "sluice vs HAProxy 1 thread vs nginx 1 worker ($(date -u +%F), ROUNDS=$ROUNDS, ${DURATION}s runs)"
echo
echo "chart: $CHART   summary: $LAST/summary.md"
