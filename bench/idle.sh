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
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
SHARED=$(cd "${SHARED:-$ROOT/../shared/bench}" && pwd)
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
  BASE_REV=$(git rev-parse --verify --quiet "$BASELINE^{commit}") || { echo "BASELINE=$BASELINE is not a commit of this repository" >&2; exit 1; }
  NAMES+=(sluice-base); ADDRS+=(127.0.0.1:8292); ADMINS+=(127.0.0.1:19392)
fi
STARTED="${NAMES[*]} backend-9201 backend-9202 backend-9203"
log() { printf '\n== %s  %s\n' "$(date +%T)" "$*"; }

command -v haproxy >/dev/null || { echo "haproxy is needed (apt-get install haproxy)" >&2; exit 1; }
for p in 9201 9202 9203 8281 8290 8292 19390 19392; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "port $p is already in use: is another bench/idle.sh running?" >&2; exit 1
  fi
done
want=$((IDLE_N * 2 + 1024))
if (($(ulimit -n) < want)); then ulimit -Hn "$want" 2>/dev/null || true; ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"; fi
HAPROXY_MAXCONN=$(( ($(ulimit -n) - 20) / 2 )); ((HAPROXY_MAXCONN > IDLE_N + 100)) && HAPROXY_MAXCONN=$((IDLE_N + 100))

BGPIDS=()
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  for p in "${BGPIDS[@]}"; do kill "$p" 2>/dev/null; done
  # shellcheck disable=SC2086
  "$SHARED/stop-peers.sh" $STARTED >/dev/null 2>&1 || true
  [[ -n $BASE_REV ]] && rm -rf "$BASE/base-src"
  echo "bench: stopped the targets and backends (exit $rc)"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
rm -rf "$LAST"; mkdir -p "$LAST" "$BIN_DIR" "$RUN_DIR"

log "building sluice and the bench tools"
go build -o "$BIN_DIR/sluice" ./cmd/sluice
go build -o "$BIN_DIR/idleclients" ./bench/cmd/idleclients
(cd "$SHARED/backend" && go build -o "$BIN_DIR/backend" .)
HEAD_REV=$(git rev-parse --short=12 HEAD)
if git status --porcelain -- cmd internal go.mod go.sum | grep -v '_test\.go$' >/dev/null; then HEAD_REV+=" + uncommitted changes"; fi
if [[ -n $BASE_REV ]]; then
  rm -rf "$BASE/base-src"; mkdir -p "$BASE/base-src"
  git archive "$BASE_REV" | tar -x -C "$BASE/base-src"
  (cd "$BASE/base-src" && go build -o "$BIN_DIR/sluice-base" ./cmd/sluice)
fi
sed -e 's/127\.0\.0\.1:9001/127.0.0.1:9201/; s/127\.0\.0\.1:9002/127.0.0.1:9202/; s/127\.0\.0\.1:9003/127.0.0.1:9203/' \
  -e "s/^\\( *maxconn\\) 8000\$/\\1 $HAPROXY_MAXCONN/" "$SHARED/peers/haproxy.cfg" >"$LAST/haproxy.cfg"
grep -q "maxconn $HAPROXY_MAXCONN\$" "$LAST/haproxy.cfg" && grep -q '127.0.0.1:9203' "$LAST/haproxy.cfg" ||
  { echo "could not adapt $SHARED/peers/haproxy.cfg (maxconn / backend ports)" >&2; exit 1; }
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
for p in 9201 9202 9203; do "$SHARED/start-one.sh" "backend-$p" -- "$BIN_DIR/backend" -addr "127.0.0.1:$p"; done
start_target() { # $1=name $2=address: a fresh process, answering
  case $1 in
    haproxy1) HAPROXY_PORT=8281 NBTHREAD=1 "$SHARED/start-one.sh" haproxy1 -- haproxy -db -f "$LAST/haproxy.cfg" ;;
    *) "$SHARED/start-one.sh" "$1" -- "$BIN_DIR/$1" run -config "$LAST/$1.yaml" ;;
  esac >/dev/null
  for _ in $(seq 50); do curl -fs -m 1 -o /dev/null "http://$2/" && return; sleep 0.1; done
  echo "$1 ($2) does not answer" >&2; exit 1
}

rss() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
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
    pid=$(cat "$RUN_DIR/$n.pid"); before=$(rss "$pid"); peak=$before
    ics=()
    for k in $(seq 0 $((procs - 1))); do
      cnt=$(( k < procs - 1 ? PER_PROC : IDLE_N - PER_PROC * (procs - 1) ))
      timeout -k 5 $((IDLE_HOLD + 120)) "$BIN_DIR/idleclients" -addr "${ADDRS[$i]}" -n "$cnt" -srcs "$SRCS" \
        -hold "${IDLE_HOLD}s" -c 500 -timeout 3s >"$LAST/idle-r$r-$n-$k.txt" 2>&1 &
      ics+=($!); BGPIDS+=($!)
    done
    gs="- - -"; t=0
    while kill -0 "${ics[0]}" 2>/dev/null; do
      kb=$(rss "$pid"); ((kb > peak)) && peak=$kb
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
  echo "\`bench/idle.sh\` with ROUNDS=$ROUNDS IDLE_N=$IDLE_N IDLE_HOLD=${IDLE_HOLD}s; sluice = $HEAD_REV$([[ -n $BASE_REV ]] && echo ", sluice-base = $BASELINE (${BASE_REV:0:12})"); $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)); $(haproxy -v 2>/dev/null | head -1 | awk '{print "HAProxy", $3}') maxconn $HAPROXY_MAXCONN; $(go version | awk '{print $3}'); load $(cut -d' ' -f1-3 /proc/loadavg)."
  echo
  awk -F'\t' -f bench/idle.awk "$LAST/idle.tsv"
} | tee "$LAST/summary.md"
