#!/usr/bin/env bash
# bench/tcp.sh — sluice's layer-4 path (protocol: tcp) beside HAProxy in mode tcp, one thread,
# on this machine (loopback only), in front of the shared harness's backends (../shared/bench).
#
# Run from the repository root:   bench/tcp.sh
# Environment:
#   ROUNDS [5]        interleaved rounds per scenario (haproxy1, haproxy1s, sluice, haproxy1, ...)
#   DURATION [10]     seconds per measured run
#   CONNS [50]        wrk -c of the conn scenario
#   BULK_CONNS [4]    wrk -c of the bulk scenario
#   BULK_PATH [/kb/1024]  what each bulk request fetches (1 MiB)
#   THREADS [2]       wrk -t
#   QUICK=1           smoke run: ROUNDS=1, DURATION=5, LOAD_WAIT=0
#   REV [HEAD]        the sluice revision measured: built from `git archive REV` in
#                     /tmp/bench/tcp/src (removed at the end), never from the working tree
#   LOAD_MAX [1.5]    before measuring, wait up to LOAD_WAIT [300] s for the 1-minute load
#                     average to fall below LOAD_MAX; the load is recorded either way
#   SCENARIOS ["conn bulk"]
#   SYSCALLS [1]      afterwards, `strace -c -f` sluice for 3 s under each scenario's load: which
#                     system calls move the bytes (splice, or read and write)
#   SHARED [../shared/bench]   the shared harness (its backend, report.lua, awk)
# Targets, one process each, CPU = utime+stime of its process tree from /proc/PID/stat:
#   haproxy1   HAProxy `nbthread 1`, mode tcp, balance roundrobin, 127.0.0.1:8581 (no splice,
#              HAProxy's default)
#   haproxy1s  the same with `option splice-auto` (HAProxy splices when it deems it useful),
#              127.0.0.1:8582
#   sluice     a protocol tcp listener on 127.0.0.1:8590, pool of tcp:// backends, round robin;
#              admin 127.0.0.1:19190
# all over the HTTP backends 127.0.0.1:9001-9003, no health checks, access log off.
# Scenarios (what a layer-4 balancer costs, two ways):
#   conn   a new TCP connection per request (wrk -c CONNS `Connection: close`, GET / of 100 B):
#          connections per proxy CPU-second; each is an accept, a connect, two relays, two closes
#   bulk   1 MiB responses on keep-alive connections (wrk -c BULK_CONNS, GET BULK_PATH): MiB
#          relayed per proxy CPU-second and MiB/s; the bytes-moving path (splice for sluice)
# Output: /tmp/bench/tcp/last/ (summary.md, runs.csv, raw/, load.txt, syscalls/).
# Everything it starts is stopped at the end and on failure.
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-5}; DURATION=${DURATION:-10}; CONNS=${CONNS:-50}; BULK_CONNS=${BULK_CONNS:-4}
BULK_PATH=${BULK_PATH:-/kb/1024}; THREADS=${THREADS:-2}
LOAD_MAX=${LOAD_MAX:-1.5}; LOAD_WAIT=${LOAD_WAIT:-300}
if [[ ${QUICK:-0} == 1 ]]; then ROUNDS=1; DURATION=5; LOAD_WAIT=0; fi
WARMUP=${WARMUP:-2}; GAP=${GAP:-1}; SYSCALLS=${SYSCALLS:-1}
SCENARIOS=${SCENARIOS:-"conn bulk"}
REV=${REV:-HEAD}
TOP=/tmp/bench/tcp
SRC=$TOP/src LAST=$TOP/last
export RUN_DIR=$TOP/run BIN_DIR=$TOP/bin
NAMES=(haproxy1 haproxy1s sluice)
ADDRS=(127.0.0.1:8581 127.0.0.1:8582 127.0.0.1:8590)
STARTED="sluice haproxy1 haproxy1s backend-9001 backend-9002 backend-9003"
STOP_MSG="bench/tcp.sh: stopped sluice, haproxy1, haproxy1s and the backends"
for s in $SCENARIOS; do
  case $s in conn|bulk) ;; *) echo "unknown scenario $s" >&2; exit 2;; esac
done
REV_FULL=$(commit_of REV "$REV")

# ---- 0. prerequisites -------------------------------------------------------
tools=(haproxy wrk curl); [[ $SYSCALLS == 1 ]] && tools+=(strace)
require "${tools[@]}"
ports_free "is another benchmark running? (bench/run.sh, bench/tls.sh, ../shared/bench/stop-peers.sh)" \
  9001 9002 9003 8581 8582 8590 19190
CLEANUP_RM=("$SRC")
stop_on_exit

rm -rf "$LAST"; mkdir -p "$LAST/raw" "$LAST/syscalls" "$BIN_DIR" "$RUN_DIR"

# ---- 1. build, configs, start, check ------------------------------------------
log "building sluice at $REV (${REV_FULL:0:12}) from git archive in $SRC, and the shared backend"
build_sluice_at "$REV_FULL" "$SRC" "$BIN_DIR/sluice"
build_backend

haproxy_cfg() { # $1=port $2=extra defaults line
  cat <<EOF
global
    nbthread 1
    maxconn 4000
    tune.bufsize 16384

defaults
    mode tcp
    timeout connect 5s
    timeout client  60s
    timeout server  60s
    $2

frontend l4
    bind 127.0.0.1:$1
    default_backend be

backend be
    balance roundrobin
    server b1 127.0.0.1:9001
    server b2 127.0.0.1:9002
    server b3 127.0.0.1:9003
EOF
}
haproxy_cfg 8581 "" >"$LAST/haproxy1.cfg"
haproxy_cfg 8582 "option splice-auto" >"$LAST/haproxy1s.cfg"
for n in haproxy1 haproxy1s; do haproxy -c -q -f "$LAST/$n.cfg"; done
cat >"$LAST/sluice.yaml" <<EOF
listeners:
  - name: l4
    address: "127.0.0.1:8590"
    protocol: tcp
    pool: be
pools:
  - name: be
    balance: round_robin
    backends:
      - {address: "tcp://127.0.0.1:9001"}
      - {address: "tcp://127.0.0.1:9002"}
      - {address: "tcp://127.0.0.1:9003"}
admin:
  address: "127.0.0.1:19190"
access_log: {format: off}
log: {level: warn}
EOF
"$BIN_DIR/sluice" validate -config "$LAST/sluice.yaml"

log "starting backends, haproxy1, haproxy1s and sluice, unpinned"
start_backends 9001 9002 9003
"$SHARED/start-one.sh" haproxy1 -- haproxy -db -f "$LAST/haproxy1.cfg"
"$SHARED/start-one.sh" haproxy1s -- haproxy -db -f "$LAST/haproxy1s.cfg"
"$SHARED/start-one.sh" sluice -- "$BIN_DIR/sluice" run -config "$LAST/sluice.yaml"
sleep 1

for a in "${ADDRS[@]}"; do # 6 new connections, 6 × 200, all 3 backends (round robin per connection)
  check_http --http1.1 "http://$a/"
  size=$(curl -s -m 10 -o /dev/null -w '%{size_download}' "http://$a$BULK_PATH")
  [[ $size -gt 0 ]] || { echo "check failed: $a$BULK_PATH returned nothing" >&2; exit 1; }
done

# ---- 2. measurement helpers (bench/lib.sh's, as ../shared/bench/run.sh measures) -------
target_of() { echo "${ADDRS[$2]}"; }
load_run() { # $1=scenario $2=address $3=seconds $4=raw output
  local wrk=(wrk -t"$THREADS" --timeout 5s --latency -s "$SHARED/report.lua")
  case $1 in
    conn) timeout -k 5 $(($3 + 30)) "${wrk[@]}" -c"$CONNS" -d"$3"s -H 'Connection: close' "http://$2/" >"$4" 2>&1 || true ;;
    bulk) timeout -k 5 $(($3 + 30)) "${wrk[@]}" -c"$BULK_CONNS" -d"$3"s "http://$2$BULK_PATH" >"$4" 2>&1 || true ;;
  esac
}
CSV=$LAST/runs.csv
echo "scenario,round,name,requests,bytes,duration_us,p99_ms,errors,proxy_cpu_s,load1" >"$CSV"
measure_one() { # one measured run: $1=scenario $2=round $3=target index; a row of runs.csv
  local s=$1 r=$2 i=$3 n raw t0 t1 line l1
  n=${NAMES[$i]}; raw=$LAST/raw/$s-r$r-$n.txt; l1=$(load1)
  t0=$(tree_ticks "$(pidof_t "$n")")
  load_run "$s" "${ADDRS[$i]}" "$DURATION" "$raw"
  t1=$(tree_ticks "$(pidof_t "$n")")
  line=$(grep '^BENCHLINE' "$raw" || true)
  if [[ -z $line ]]; then echo "!! $s r=$r $n: no result (see $raw)" >&2; tail -3 "$raw" >&2; return; fi
  awk -v s="$s" -v r="$r" -v n="$n" -v dt=$((t1 - t0)) -v clk="$CLK" -v l1="$l1" '
    { for (i=2;i<=NF;i++) { split($i, kv, "="); v[kv[1]]=kv[2] } }
    END { err = v["err_connect"]+v["err_read"]+v["err_write"]+v["err_timeout"]+v["err_status"]
          printf "%s,%s,%s,%d,%.0f,%.0f,%.3f,%d,%.2f,%s\n", s, r, n, v["requests"], v["bytes"], v["duration_us"],
            v["p99_us"]/1000, err, dt/clk, l1 }' <<<"$line" | tee -a "$CSV" |
    awk -F, '{ cpu=$9; u=($1=="conn") ? $4 : $5/1048576; printf "  %-5s r=%s %-9s %10.0f %s/s  %10.0f %s per proxy CPU-s  p99 %s ms  errors %s  load %s\n",
      $1, $2, $3, u/($6/1e6), ($1=="conn"?"conn":"MiB"), (cpu>0?u/cpu:0), ($1=="conn"?"conn":"MiB"), $7, $8, $10 }'
}

# ---- 3. wait for a quiet machine, then the scenarios --------------------------
wait_quiet
sample_load %T
for s in $SCENARIOS; do
  log "$s: $ROUNDS interleaved rounds of ${DURATION}s, load $(load1)"
  { echo "# $s start: $(uptime)"; others; } >>"$LAST/load.txt"
  interleave measure_one "$s"
done
stop_sampler

# ---- 4. which system calls move the bytes ---------------------------------------
if [[ $SYSCALLS == 1 ]]; then
  for s in $SCENARIOS; do
    log "syscalls: strace -c -f on sluice for 3 s under $s"
    load_run "$s" 127.0.0.1:8590 6 "$LAST/syscalls/$s.load.txt" & lp=$!; BGPIDS+=("$lp")
    sleep 1
    timeout -s INT 3 strace -c -f -p "$(pidof_t sluice)" -o "$LAST/syscalls/$s.txt" 2>/dev/null || true
    wait "$lp" || true
  done
fi

# ---- 5. summary -------------------------------------------------------------
log "summary"
{
  echo "# sluice's layer-4 path vs HAProxy mode tcp — $(date -u +%FT%TZ)"
  echo
  echo "\`bench/tcp.sh\` with ROUNDS=$ROUNDS DURATION=${DURATION}s CONNS=$CONNS BULK_CONNS=$BULK_CONNS BULK_PATH=$BULK_PATH$([[ ${QUICK:-0} == 1 ]] && echo " (QUICK=1)"); sluice $(git rev-parse --short=12 "$REV_FULL") (REV=$REV, built from git archive); $(machine); $(haproxy_version), $(wrk_version), $(go_version)."
  echo
  echo "Load (1-, 5-, 15-minute averages): $LOAD_BEFORE before; $LOAD_START when measuring began, after ${waited} s of waiting for the 1-minute load to fall below $LOAD_MAX (at most $LOAD_WAIT s); while measuring, the 1-minute load sampled every 5 s: $(load_stats)."
  echo
  awk -F, -v tgt=sluice -f "$ROOT/bench/stats.awk" -f "$ROOT/bench/tcp.awk" "$CSV"
  if [[ $SYSCALLS == 1 ]]; then
    echo
    echo "System calls of sluice during 3 s of each load (strace -c -f; the calls that move bytes and handle connections):"
    echo
    for s in $SCENARIOS; do
      echo "- $s: $(awk '$NF ~ /^(splice|read|write|readv|writev|recvfrom|sendto|accept4|connect|close|shutdown|pipe2)$/ && $4 ~ /^[0-9]+$/ { printf "%s%s %s", sep, $NF, $4; sep=", " }' "$LAST/syscalls/$s.txt")"
    done
  fi
} >"$LAST/summary.md"
echo
cat "$LAST/summary.md"
echo
echo "summary: $LAST/summary.md   runs: $CSV   raw: $LAST/raw/"
