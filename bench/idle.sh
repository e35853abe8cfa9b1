#!/usr/bin/env bash
# bench/idle.sh — memory of idle keep-alive HTTP/1.1 clients: sluice (default engine) beside
# HAProxy (nbthread 1), interleaved rounds on this machine, loopback only.
#
# Run from the repository root:   bench/idle.sh
# Environment:
#   ROUNDS [3]       interleaved rounds (haproxy1, sluice[, sluice-base], haproxy1, …)
#   IDLE_N [10000]   idle clients per run: each opens a connection, sends one GET / and reads the
#                    answer, then holds the connection open (bench/cmd/idleclients)
#   IDLE_HOLD [10]   seconds they are held once all are open
#   SRCS [auto]      source addresses 127.0.0.1 … 127.0.0.SRCS the clients spread over (one
#                    ephemeral port range each: automatic is one per 20,000 clients)
#   PER_PROC [15000] clients per idleclients process (each needs a descriptor per client)
#   BASELINE []      a git revision: also build sluice there and run it as sluice-base
#   BASE_CGO [0]     1: build sluice-base with cgo (a plain `go build`); sluice is built as
#                    `make build` does (CGO_ENABLED=0)
#   SHARED [../shared/bench]
# Targets: haproxy1 (the shared peers/haproxy.cfg, its own backend ports, maxconn raised to
# IDLE_N+100 or as far as the descriptor limit allows: 2 × maxconn + 14), sluice :8290 (admin
# :19390), sluice-base :8292 (admin :19392), backends: the shared backend on 127.0.0.1:9201-9203.
# The descriptor limit is raised for this script's children only (ulimit -n), up to the hard
# limit; a target that runs out of descriptors holds fewer clients, which the table says.
# Every run starts on a fresh proxy process (started before the run, stopped after it).
# Per run: RSS before, peak RSS (VmRSS sampled every 0.25 s while the clients open and are held),
# clients held, and for sluice the Go runtime's view at the middle of the hold from its
# /metrics (stack in use, heap in use, goroutines).
# Output: /tmp/bench/idle/last/ (idle.tsv, summary.md, per-run client output).
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-3}; IDLE_N=${IDLE_N:-10000}; IDLE_HOLD=${IDLE_HOLD:-10}; PER_PROC=${PER_PROC:-15000}
SRCS=${SRCS:-$(( (IDLE_N + 19999) / 20000 ))}
BASELINE=${BASELINE:-}; BASE_REV=""
BASE=/tmp/bench/idle
export RUN_DIR=$BASE/run BIN_DIR=$BASE/bin
LAST=$BASE/last
NAMES=(haproxy1 sluice)
ADDRS=(127.0.0.1:8281 127.0.0.1:8290)
ADMINS=("" 127.0.0.1:19390)
if [[ -n $BASELINE ]]; then
  BASE_REV=$(commit_of BASELINE "$BASELINE")
  NAMES+=(sluice-base); ADDRS+=(127.0.0.1:8292); ADMINS+=(127.0.0.1:19392)
fi
STARTED="${NAMES[*]} backend-9201 backend-9202 backend-9203"
STOP_MSG="bench: stopped the targets and backends"

command -v haproxy >/dev/null || { echo "haproxy is needed (apt-get install haproxy)" >&2; exit 1; }
ports_free "is another bench/idle.sh running?" 9201 9202 9203 8281 8290 8292 19390 19392
idle_fds
[[ -n $BASE_REV ]] && CLEANUP_RM=("$BASE/base-src")
stop_on_exit
rm -rf "$LAST"; mkdir -p "$LAST" "$BIN_DIR" "$RUN_DIR"

log "building sluice and the bench tools"
build_sluice -o "$BIN_DIR/sluice" ./cmd/sluice
go build -o "$BIN_DIR/idleclients" ./bench/cmd/idleclients
build_backend
HEAD_REV=$(worktree_rev cmd internal go.mod go.sum)
[[ -n $BASE_REV ]] && build_sluice_at "$BASE_REV" "$BASE/base-src" "$BIN_DIR/sluice-base"
haproxy_cfg_at 9201 9202 9203 "$HAPROXY_MAXCONN" "$LAST/haproxy.cfg"
sluice_cfg() { # $1=listen port $2=admin port
  cat <<EOF
listeners:
  - name: bench
    address: "127.0.0.1:$1"
    pool: web
pools:
  - name: web
    balance: round_robin
    backends:
      - {address: "http://127.0.0.1:9201"}
      - {address: "http://127.0.0.1:9202"}
      - {address: "http://127.0.0.1:9203"}
admin:
  address: "127.0.0.1:$2"
access_log: {format: off}
log: {level: warn}
EOF
}
sluice_cfg 8290 19390 >"$LAST/sluice.yaml"
"$BIN_DIR/sluice" validate -config "$LAST/sluice.yaml"
[[ -n $BASE_REV ]] && sluice_cfg 8292 19392 >"$LAST/sluice-base.yaml"

log "starting the backends"
start_backends 9201 9202 9203
start_target() { # $1=name $2=address: a fresh process, answering
  case $1 in
    haproxy1) HAPROXY_PORT=8281 NBTHREAD=1 "$SHARED/start-one.sh" haproxy1 -- haproxy -db -f "$LAST/haproxy.cfg" ;;
    *) "$SHARED/start-one.sh" "$1" -- "$BIN_DIR/$1" run -config "$LAST/$1.yaml" ;;
  esac >/dev/null
  for _ in $(seq 50); do curl -fs -m 1 -o /dev/null "http://$2/" && return; sleep 0.1; done
  echo "$1 ($2) does not answer" >&2; exit 1
}

gostat() { # $1=admin: "stack_KiB heap_inuse_KiB goroutines" from /metrics
  curl -fs -m 2 "http://$1/metrics" | awk '
    $1 == "go_memstats_stack_inuse_bytes" { s = $2 } $1 == "go_memstats_heap_inuse_bytes" { h = $2 }
    $1 == "go_goroutines" { g = $2 } END { printf "%d %d %d\n", s / 1024, h / 1024, g }'
}
printf 'round\ttarget\tn\tbefore_kib\tpeak_kib\theld\tstack_kib\theap_kib\tgoroutines\n' >"$LAST/idle.tsv"
procs=$(( (IDLE_N + PER_PROC - 1) / PER_PROC ))
log "$ROUNDS rounds of $IDLE_N idle clients held ${IDLE_HOLD}s ($procs client processes, $SRCS source addresses)"
for r in $(seq "$ROUNDS"); do
  for i in "${!NAMES[@]}"; do
    n=${NAMES[$i]}; start_target "$n" "${ADDRS[$i]}"; sleep 1
    pid=$(pidof_t "$n"); before=$(rss_tree "$pid"); peak=$before
    ics=()
    for k in $(seq 0 $((procs - 1))); do
      cnt=$(( k < procs - 1 ? PER_PROC : IDLE_N - PER_PROC * (procs - 1) ))
      timeout -k 5 $((IDLE_HOLD + 120)) "$BIN_DIR/idleclients" -addr "${ADDRS[$i]}" -n "$cnt" -srcs "$SRCS" \
        -hold "${IDLE_HOLD}s" -c 500 -timeout 3s >"$LAST/idle-r$r-$n-$k.txt" 2>&1 &
      ics+=($!); BGPIDS+=($!)
    done
    gs="- - -"; t=0
    while kill -0 "${ics[0]}" 2>/dev/null; do
      kb=$(rss_tree "$pid"); ((kb > peak)) && peak=$kb
      # the Go runtime's view once every client process is holding, half way through the hold
      if [[ -n ${ADMINS[$i]} && $gs == "- - -" ]] && grep -q 'idleclients addr' "$LAST"/idle-r$r-$n-*.txt 2>/dev/null; then
        [[ $t == 0 ]] && t=$(date +%s.%N)
        if (($(grep -l 'idleclients addr' "$LAST"/idle-r$r-$n-*.txt | wc -l) == procs)) &&
          awk -v t="$t" -v h="$IDLE_HOLD" -v now="$(date +%s.%N)" 'BEGIN { exit !(now - t >= h / 2) }'; then
          gs=$(gostat "${ADMINS[$i]}" || echo "- - -")
        fi
      fi
      sleep 0.25
    done
    for p in "${ics[@]}"; do wait "$p" || echo "idleclients for $n exited with an error (see $LAST/idle-r$r-$n-*.txt)" >&2; done
    held=$(cat "$LAST"/idle-r$r-$n-*.txt | sed -n 's/.* alive_at_end=\([0-9]*\).*/\1/p' | awk '{ s += $1 } END { print s + 0 }')
    read -r st hp gr <<<"$gs"
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$n" "$IDLE_N" "$before" "$peak" "$held" "$st" "$hp" "$gr" | tee -a "$LAST/idle.tsv"
    "$SHARED/stop-peers.sh" "$n" >/dev/null
  done
done

{
  echo "# idle keep-alive clients — $(date -u +%FT%TZ)"
  echo
  echo "\`bench/idle.sh\` with ROUNDS=$ROUNDS IDLE_N=$IDLE_N IDLE_HOLD=${IDLE_HOLD}s; sluice = $HEAD_REV$([[ -n $BASE_REV ]] && echo ", sluice-base = $BASELINE (${BASE_REV:0:12})"); $(machine); $(haproxy_version) maxconn $HAPROXY_MAXCONN; $(go_version); load $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  awk -F'\t' -f bench/idle.awk "$LAST/idle.tsv"
} | tee "$LAST/summary.md"
