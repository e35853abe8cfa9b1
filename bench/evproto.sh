#!/usr/bin/env bash
# bench/evproto.sh — issue 15: the event-driven prototype (bench/evproto) beside sluice's current
# HTTP/1.1 engine and HAProxy (nbthread 1), in one interleaved run on this machine (loopback only),
# with the shared harness in ../shared/bench used as it is.
#
# Run from the repository root:   bench/evproto.sh
# Environment:
#   ROUNDS [3]        interleaved rounds per wrk/hey scenario (ROUNDS=5 for figures to quote)
#   DURATION [10]     seconds per measured run
#   RATE [4000]       total req/s of the fixed-rate scenario (hey, c=50)
#   IDLE_N [10000]    idle keep-alive clients (scenario idle)
#   IDLE_HOLD [10]    seconds they are held
#   STREAMS [10]      h2load -m in the h2c scenario: concurrent streams per connection
#   SCENARIOS ["small-c50 small-c256 kb64-c50 rate idle h2c"]; "none" with PROFILE=1: the profile only
#   PROFILE=1         afterwards, per target: `perf stat` (system calls by kind, context switches, CPU)
#                     over a wrk c=50 run of PROFILE_SECS [8] s, and `perf record -e cpu-clock -g`
#                     under the same load (CPU by category: bench/perfsplit.awk; top symbols)
#   SHARED [../shared/bench]
# Targets (ports chosen not to collide with bench/run.sh and bench/tls.sh):
#   haproxy1   HAProxy, the shared peers/haproxy.cfg with the backend ports below and maxconn
#              raised from 8000 to IDLE_N+100 (so that it holds all the idle clients), or as
#              far as the descriptor limit allows (2 x maxconn + 14), nbthread 1, :8181
#   sluice     sluice built from the working tree, default engine (h1), :8190 (admin :19290);
#              h2c (prior knowledge) on :8191
#   evproto    the prototype, GOMAXPROCS event loops (-mode loop), :8194; h2c on :8197
#              (-h2c-listen); HAProxy takes h2c on :8181 by preface detection
#   evproto-g  the prototype's control, one goroutine per connection (-mode goroutine), :8195
#   evproto-core  the prototype with -core: each request through sluice's core (routing, the
#              pool's pick and slot, passive health, latency histograms, the listener's counters,
#              with sluice's own packages), :8198, h2c on :8199
#   evproto-rt (PROFILE=1 only) the prototype with -wait runtime: its loops wait in epoll_wait
#              through the scheduler (unix.EpollWait) instead of keeping their P, :8196
#   backends   the shared backend on 127.0.0.1:9101-9103 (/ = 100 B, /kb/64 = 64 KiB)
# Scenarios:
#   small-c50, small-c256  wrk -t2, 100 B responses     kb64-c50  wrk -t2, 64 KiB responses
#   rate       hey, RATE req/s over 50 connections (equal load: CPU per request, p99)
#   idle       IDLE_N idle keep-alive clients per target (bench/cmd/idleclients): peak RSS
#   h2c        HTTP/2 over cleartext, prior knowledge, 100 B responses: h2load -c50 -m STREAMS
#              (haproxy1, sluice, evproto; the shared harness's TOOL=h2load: no p99)
# The file-descriptor limit is raised for this script's children only (ulimit -n).
# Output: /tmp/bench/evproto/last/ (summary.md, per-scenario runs.csv and raw/, load.txt,
# load-samples.txt, idle.tsv, perf/). Everything it starts is stopped at the end and on failure.
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-10}; RATE=${RATE:-4000}
IDLE_N=${IDLE_N:-10000}; IDLE_HOLD=${IDLE_HOLD:-10}
SCENARIOS=${SCENARIOS:-"small-c50 small-c256 kb64-c50 rate idle h2c"}; STREAMS=${STREAMS:-10}
PROFILE=${PROFILE:-0}; PROFILE_SECS=${PROFILE_SECS:-8}
BASE=/tmp/bench/evproto
export RUN_DIR=$BASE/run BIN_DIR=$BASE/bin
LAST=$BASE/last
BPORTS=(9101 9102 9103)
BACKENDS=127.0.0.1:9101,127.0.0.1:9102,127.0.0.1:9103
NAMES=(haproxy1 sluice evproto evproto-g evproto-core)
ADDRS=(127.0.0.1:8181 127.0.0.1:8190 127.0.0.1:8194 127.0.0.1:8195 127.0.0.1:8198)
TARGETS=(); for i in "${!NAMES[@]}"; do TARGETS+=("${NAMES[$i]}=http://${ADDRS[$i]}/"); done
H2TARGETS=(haproxy1=http://127.0.0.1:8181/ sluice=http://127.0.0.1:8191/ evproto=http://127.0.0.1:8197/
  evproto-core=http://127.0.0.1:8199/)
STARTED="${NAMES[*]} evproto-rt backend-9101 backend-9102 backend-9103"
STOP_MSG="bench: stopped the targets and backends"

# ---- 0. prerequisites ---------------------------------------------------------
tools=(haproxy wrk hey curl h2load:nghttp2-client); [[ $PROFILE == 1 ]] && tools+=(perf:linux-perf)
require "${tools[@]}"
ports_free "is another bench/evproto.sh running?" "${BPORTS[@]}" 8181 8190 8191 8194 8195 8196 8197 8198 8199 19290
# idle clients: this script's children (HAProxy, which sizes its descriptors as 2 x maxconn + 14,
# and the idle clients) may need more descriptors than the default; raised here only, up to what
# the hard limit allows (a container may forbid raising that)
idle_fds
((HAPROXY_MAXCONN < 8000)) && HAPROXY_MAXCONN=8000

stop_on_exit

rm -rf "$LAST"; mkdir -p "$LAST" "$BIN_DIR" "$RUN_DIR"

# ---- 1. build, configure, start, check ------------------------------------------
log "building sluice, the prototype and the bench tools"
build_sluice -o "$BIN_DIR/sluice" ./cmd/sluice
go build -o "$BIN_DIR/evproto" ./bench/evproto
go build -o "$BIN_DIR/idleclients" ./bench/cmd/idleclients
build_backend
HEAD_REV=$(worktree_rev cmd internal bench/evproto go.mod go.sum)

haproxy_cfg_at 9101 9102 9103 "$HAPROXY_MAXCONN" "$LAST/haproxy.cfg"
cat >"$LAST/sluice.yaml" <<'EOF'
listeners:
  - name: bench
    address: "127.0.0.1:8190"
    pool: web
  - name: h2c
    address: "127.0.0.1:8191"
    pool: web
    h2c: true
pools:
  - name: web
    balance: round_robin
    backends:
      - {address: "http://127.0.0.1:9101"}
      - {address: "http://127.0.0.1:9102"}
      - {address: "http://127.0.0.1:9103"}
admin:
  address: "127.0.0.1:19290"
access_log: {format: off}
log: {level: warn}
EOF
"$BIN_DIR/sluice" validate -config "$LAST/sluice.yaml"

log "starting backends, haproxy1, sluice, evproto, evproto-g, evproto-core (unpinned)"
start_backends "${BPORTS[@]}"
NBTHREAD=1 HAPROXY_PORT=8181 "$SHARED/start-one.sh" haproxy1 -- haproxy -db -f "$LAST/haproxy.cfg"
"$SHARED/start-one.sh" sluice -- "$BIN_DIR/sluice" run -config "$LAST/sluice.yaml"
"$SHARED/start-one.sh" evproto -- "$BIN_DIR/evproto" -mode loop -listen 127.0.0.1:8194 -h2c-listen 127.0.0.1:8197 -backends "$BACKENDS"
"$SHARED/start-one.sh" evproto-g -- "$BIN_DIR/evproto" -mode goroutine -listen 127.0.0.1:8195 -backends "$BACKENDS"
"$SHARED/start-one.sh" evproto-core -- "$BIN_DIR/evproto" -mode loop -core -listen 127.0.0.1:8198 -h2c-listen 127.0.0.1:8199 -backends "$BACKENDS"
sleep 0.5
urls=(); for a in "${ADDRS[@]}"; do urls+=("http://$a/" "http://$a/kb/64"); done
"$SHARED/check.sh" "${urls[@]}"
for t in "${H2TARGETS[@]}"; do
  curl -sf --http2-prior-knowledge -o /dev/null "${t#*=}" || { echo "bench: ${t%%=*} does not answer h2c at ${t#*=}" >&2; exit 1; }
done

# ---- load: recorded, not waited for ---------------------------------------------------
sample_load %s
{ echo "# start: $(uptime)"; others; } | tee "$LAST/load.txt"
: >"$LAST/scenario-times.txt"

# ---- 2. scenarios -----------------------------------------------------------------------
CSVS=()
for s in $SCENARIOS; do
  [[ $s == none ]] && continue
  t0=$(date +%s)
  { echo "# $s start: $(uptime)"; others; } >>"$LAST/load.txt"
  case $s in
    small-c50)  log "100 B, wrk c=50";  LABEL=small CONNS=50 ROUNDS=$ROUNDS DURATION=$DURATION OUT=$LAST/$s "$SHARED/run.sh" "${TARGETS[@]}" ;;
    small-c256) log "100 B, wrk c=256"; LABEL=small CONNS=256 ROUNDS=$ROUNDS DURATION=$DURATION OUT=$LAST/$s "$SHARED/run.sh" "${TARGETS[@]}" ;;
    kb64-c50)   log "64 KiB, wrk c=50"; URL_PATH=/kb/64 LABEL=kb64 CONNS=50 ROUNDS=$ROUNDS DURATION=$DURATION OUT=$LAST/$s "$SHARED/run.sh" "${TARGETS[@]}" ;;
    h2c)        log "HTTP/2 over cleartext, h2load c=50 m=$STREAMS"; TOOL=h2load STREAMS=$STREAMS LABEL=h2c CONNS=50 ROUNDS=$ROUNDS DURATION=$DURATION OUT=$LAST/$s "$SHARED/run.sh" "${H2TARGETS[@]}" ;;
    rate)       log "100 B, hey at $RATE req/s, c=50"; TOOL=hey RATE=$RATE LABEL=rate CONNS=50 ROUNDS=$ROUNDS DURATION=$DURATION OUT=$LAST/$s "$SHARED/run.sh" "${TARGETS[@]}" ;;
    idle)
      log "$IDLE_N idle keep-alive clients per target, held ${IDLE_HOLD}s"
      : >"$LAST/idle.tsv"
      for i in "${!NAMES[@]}"; do
        n=${NAMES[$i]}
        idle_clients "$n" "${ADDRS[$i]}"
        printf 'idle\t%s\t%s\t%s\t%s\t%s\t%s\n' "$IDLE_N" "$n" "$IDLE_BEFORE" "$IDLE_PEAK" "${IDLE_OK:-0}" "${IDLE_ALIVE:-0}" | tee -a "$LAST/idle.tsv"
        sleep 3
      done ;;
    *) echo "unknown scenario $s (small-c50 small-c256 kb64-c50 rate idle h2c)" >&2; exit 2 ;;
  esac
  [[ -f $LAST/$s/runs.csv ]] && CSVS+=("$LAST/$s/runs.csv")
  echo "$s $t0 $(date +%s)" >>"$LAST/scenario-times.txt"
done
{ echo "# end of the measurements: $(uptime)"; } | tee -a "$LAST/load.txt"

# ---- 3. optional profile ------------------------------------------------------------------
if [[ $PROFILE == 1 ]]; then
  profile_begin
  perfstat_begin
  "$SHARED/start-one.sh" evproto-rt -- "$BIN_DIR/evproto" -mode loop -wait runtime -listen 127.0.0.1:8196 -backends "$BACKENDS"
  "$SHARED/check.sh" http://127.0.0.1:8196/
  PNAMES=("${NAMES[@]}" evproto-rt); PADDRS=("${ADDRS[@]}" 127.0.0.1:8196)
  for i in "${!PNAMES[@]}"; do profile_target "${PNAMES[$i]}" "${PADDRS[$i]}"; done
fi
stop_sampler
# their counters (requests, dials, retries per loop) go to their logs when they stop
"$SHARED/stop-peers.sh" evproto evproto-g evproto-core evproto-rt >/dev/null 2>&1 || true
grep -h '^evproto: stopping' "$RUN_DIR"/evproto*.log >"$LAST/evproto-counters.txt" 2>/dev/null || true

# ---- 4. summary -----------------------------------------------------------------------------
log "summary"
{
  echo "# Issue 15: event-driven prototype vs sluice's engine vs HAProxy — $(date -u +%FT%TZ)"
  echo
  echo "\`bench/evproto.sh\` with ROUNDS=$ROUNDS DURATION=${DURATION}s RATE=$RATE STREAMS=$STREAMS IDLE_N=$IDLE_N IDLE_HOLD=${IDLE_HOLD}s SCENARIOS=\"$SCENARIOS\"; sluice and evproto at $HEAD_REV; $(machine); $(haproxy_version), $(wrk_version), $(go_version)."
  echo
  echo "Machine load (1-minute average, sampled every 5 s, this benchmark included):"
  echo
  while read -r s a b; do echo "* $s: $(load_stats "$a" "$b")"; done <"$LAST/scenario-times.txt"
  echo
  echo "Requests per proxy CPU-second (utime+stime from /proc/PID/stat around each run), per-round ratios (bench/rounds.awk):"
  echo
  ((${#CSVS[@]})) && awk -F, -v ref=haproxy1 -v eng=sluice -v rate="$RATE" -f "$ROOT/bench/stats.awk" -f "$ROOT/bench/rounds.awk" "${CSVS[@]}"
  if [[ -s $LAST/idle.tsv ]]; then
    echo
    echo "Idle keep-alive clients (bench/cmd/idleclients): RSS before, peak while held, and per held connection:"
    echo
    echo "| target | clients asked | answered | alive at end | RSS before MiB | peak RSS MiB | KiB per alive connection | peak x haproxy1 |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|"
    awk -F'\t' '{ n[NR] = $3; b[NR] = $4; p[NR] = $5; ok[NR] = $6; al[NR] = $7; a[NR] = $2; if ($3 == "haproxy1") ref = $5 }
      END { for (i = 1; i <= NR; i++) printf "| %s | %d | %d | %d | %.1f | %.1f | %s | %s |\n", n[i], a[i], ok[i], al[i], b[i] / 1024, p[i] / 1024,
        (al[i] > 0) ? sprintf("%.2f", (p[i] - b[i]) / al[i]) : "-", (ref > 0) ? sprintf("%.2f", p[i] / ref) : "-" }' "$LAST/idle.tsv"
  fi
  if [[ -s $LAST/perf/stat.md ]]; then
    echo
    echo "System calls and context switches per request (perf stat on the proxy over a ${PROFILE_SECS} s wrk c=50 run):"
    echo
    cat "$LAST/perf/stat.md"
    echo
    echo "Where each proxy's CPU goes (perf record -e cpu-clock, self time, % of the process's samples; bench/perfsplit.awk):"
    echo
    cat "$LAST/perf/split.md"
  fi
  echo
  shared_tables "${CSVS[@]}"
} >"$LAST/summary.md"
echo
cat "$LAST/summary.md"
echo
echo "summary: $LAST/summary.md"
