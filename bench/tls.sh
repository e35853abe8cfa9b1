#!/usr/bin/env bash
# bench/tls.sh — sluice vs HAProxy (1 thread) over TLS and HTTP/2, side by side on this
# machine (loopback only), in front of the shared harness's backends (../shared/bench).
#
# Run from the repository root:   bench/tls.sh
# Environment:
#   ROUNDS [5]       interleaved rounds per scenario (haproxy1, sluice, haproxy1, sluice, ...)
#   DURATION [10]    seconds per measured run
#   CONNS [50]       client connections (wrk -c, h2load -c, tlsload -c)
#   STREAMS [10]     h2load -m: concurrent streams per HTTP/2 connection
#   THREADS [2]      wrk / h2load -t
#   QUICK=1          smoke run: ROUNDS=1, DURATION=5, LOAD_WAIT=0
#   REV [HEAD]       the sluice revision measured: built from `git archive REV` in
#                    /tmp/bench/tls/src (removed at the end), never from the working tree
#   LOAD_MAX [1.5]   before measuring, wait up to LOAD_WAIT [300] s for the 1-minute load
#                    average to fall below LOAD_MAX (other work on the machine); the load is
#                    recorded either way (load.txt, and per run in runs.csv)
#   SCENARIOS ["http-ka https-ka https-rate tls-full tls-resume h2-tls h2c"]   which ones, in this order
#   RATE [4000]      req/s offered in total in https-rate (below every target's saturation here)
#   PROFILE=1        afterwards, `perf record -e cpu-clock -g` each proxy for PROFILE_SECS [8] s
#                    under each scenario's load; CPU by category (bench/perfsplit.awk) in the
#                    summary, reports in perf/ (installs linux-perf when missing, as root)
#   EVPROTO=1        a third target in the HTTP/2 scenarios (h2-tls, h2c): bench/evproto, the
#                    event-loop prototype, built from the working tree, HTTP/2 over TLS on
#                    127.0.0.1:8499 (-h2-tls-listen) and h2c on 127.0.0.1:8097 (-h2c-listen);
#                    the summary adds evproto ÷ haproxy1 and evproto ÷ sluice
#   H1=1             a third target: the same sluice with `engine: h1` (the goroutine engine)
#                    on its TLS and h2c listeners (127.0.0.1:8491, 127.0.0.1:8091; admin 19191),
#                    in every scenario; the summary adds sluice ÷ sluice-h1
#   HAP2=1           a target with two threads: haproxy2, the same HAProxy config with `nbthread 2`
#                    (127.0.0.1:8082, TLS 127.0.0.1:8482), like for like with sluice's default of
#                    one loop per CPU (2 here); the summary adds sluice ÷ haproxy2
#   ONE_LOOP=1       a target with one loop: sluice-1loop, the same sluice config with
#                    `event_loops: 1` (127.0.0.1:8492, h2c 127.0.0.1:8092, admin 19192), like for
#                    like with haproxy1's one thread; the summary adds sluice-1loop ÷ haproxy1
#                    (on 2 CPUs shared with the load and the backends, two threads widen the
#                    latency spread of a saturated run: each serves its own connections, and
#                    the one that shares its CPU with more of the others falls behind)
#   SHARED [../shared/bench]   the shared harness (its backend, haproxy.cfg, report.lua, awk)
# Targets, one process each, CPU = utime+stime of its process tree from /proc/PID/stat:
#   haproxy1  HAProxy `nbthread 1`: the shared peers/haproxy.cfg (127.0.0.1:8081: HTTP/1.1, and
#             h2c by preface detection) plus `bind 127.0.0.1:8481 ssl crt FILE alpn h2,http/1.1`
#   sluice    listener "tls" on 127.0.0.1:8490 (`tls: {certificates: [{cert, key}]}`, ALPN h2 and
#             http/1.1) and listener "h2c" on 127.0.0.1:8090 (`h2c: true`); admin 127.0.0.1:19190
# both balancing round robin over the backends 127.0.0.1:9001-9003 (100-byte bodies at /).
# The certificate: ECDSA P-256, self-signed, for IP 127.0.0.1, made with openssl in the run dir.
# Scenarios (c=CONNS, 100 B responses):
#   http-ka     plain HTTP/1.1 keep-alive (wrk http://, on :8081 / :8090): the reference for
#               what TLS itself costs per request (https-ka minus http-ka, per round)
#   https-ka    HTTPS keep-alive, HTTP/1.1 (wrk https://, no ALPN)
#   https-rate  HTTPS keep-alive at a fixed RATE offered, open loop (bench/cmd/tlsload -keepalive
#               -rate: each connection on a fixed schedule, latency from the scheduled send time,
#               as wrk2 measures): the latencies of an equal load below saturation, where
#               https-ka's come from saturated runs at the rate each proxy reaches
#   tls-full    a new connection and a full TLS 1.3 handshake per request: X25519 key exchange
#               and an ECDSA P-256 signature each time (bench/cmd/tlsload, which never resumes)
#   tls-resume  a new connection per request as wrk makes it (-H 'Connection: close'): wrk
#               resumes its TLS session on every reconnect (PSK + X25519, no signature)
#   h2-tls      HTTP/2 over TLS, ALPN h2 (h2load -m STREAMS; p99 from h2load's --log-file)
#   h2c         HTTP/2 over cleartext, prior knowledge (h2load -m STREAMS)
# Output: /tmp/bench/tls/last/ (summary.md, runs.csv, raw/, load.txt, tls-params.txt, perf/).
# Everything it starts is stopped at the end and on failure.
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-5}; DURATION=${DURATION:-10}; CONNS=${CONNS:-50}; STREAMS=${STREAMS:-10}; THREADS=${THREADS:-2}
LOAD_MAX=${LOAD_MAX:-1.5}; LOAD_WAIT=${LOAD_WAIT:-300}
if [[ ${QUICK:-0} == 1 ]]; then ROUNDS=1; DURATION=5; LOAD_WAIT=0; fi
WARMUP=${WARMUP:-2}; GAP=${GAP:-1}; PROFILE=${PROFILE:-0}; PROFILE_SECS=${PROFILE_SECS:-8}
SCENARIOS=${SCENARIOS:-"http-ka https-ka https-rate tls-full tls-resume h2-tls h2c"}
RATE=${RATE:-4000}
REV=${REV:-HEAD}
TOP=/tmp/bench/tls
SRC=$TOP/src LAST=$TOP/last
export RUN_DIR=$TOP/run BIN_DIR=$TOP/bin
NAMES=(haproxy1 sluice)
TLS_ADDRS=(127.0.0.1:8481 127.0.0.1:8490)
H2C_ADDRS=(127.0.0.1:8081 127.0.0.1:8090)
STARTED="sluice haproxy1 backend-9001 backend-9002 backend-9003"
STOP_MSG="bench/tls.sh: stopped sluice, haproxy1 and the backends"
# add_target NAME TLS_ADDR H2C_ADDR: one more target, started and stopped with the others
add_target() {
  NAMES+=("$1"); TLS_ADDRS+=("$2"); H2C_ADDRS+=("$3")
  STARTED+=" $1"; STOP_MSG="bench/tls.sh: stopped the proxies and the backends"
}
EVPROTO=${EVPROTO:-0}; H1=${H1:-0}; HAP2=${HAP2:-0}; ONE_LOOP=${ONE_LOOP:-0}
[[ $EVPROTO == 1 ]] && add_target evproto 127.0.0.1:8499 127.0.0.1:8097
[[ $H1 == 1 ]] && add_target sluice-h1 127.0.0.1:8491 127.0.0.1:8091
[[ $HAP2 == 1 ]] && add_target haproxy2 127.0.0.1:8482 127.0.0.1:8082
[[ $ONE_LOOP == 1 ]] && add_target sluice-1loop 127.0.0.1:8492 127.0.0.1:8092
for s in $SCENARIOS; do
  case $s in http-ka|https-ka|https-rate|tls-full|tls-resume|h2-tls|h2c) ;; *) echo "unknown scenario $s" >&2; exit 2;; esac
done
REV_FULL=$(commit_of REV "$REV")

# ---- 0. prerequisites -------------------------------------------------------
tools=(haproxy wrk h2load:nghttp2-client openssl curl); [[ $PROFILE == 1 ]] && tools+=(perf:linux-perf)
require "${tools[@]}"
ports_free "is another benchmark running? (bench/run.sh, ../shared/bench/stop-peers.sh)" \
  9001 9002 9003 8081 8481 8090 8490 19190 8097 8499 8091 8491 19191 8082 8482 8092 8492 19192
CLEANUP_RM=("$SRC")
stop_on_exit

rm -rf "$LAST"; mkdir -p "$LAST/raw" "$BIN_DIR" "$RUN_DIR"

# ---- 1. build, certificate, configs, start, check ---------------------------
log "building sluice at $REV (${REV_FULL:0:12}) from git archive in $SRC, and the bench tools"
build_sluice_at "$REV_FULL" "$SRC" "$BIN_DIR/sluice"
go build -o "$BIN_DIR/tlsload" ./bench/cmd/tlsload
[[ $EVPROTO == 1 ]] && go build -o "$BIN_DIR/evproto" ./bench/evproto
build_backend

log "ECDSA P-256 certificate for 127.0.0.1 in $LAST"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 \
  -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
  -keyout "$LAST/key.pem" -out "$LAST/cert.pem" 2>/dev/null
cat "$LAST/cert.pem" "$LAST/key.pem" >"$LAST/haproxy.pem"
openssl x509 -in "$LAST/cert.pem" -noout -text | grep -qE 'NIST CURVE: P-256'

# HAProxy: the shared config as it is, plus one TLS bind on the same frontend
sed -e 's|^    bind "127.0.0.1:${HAPROXY_PORT}"$|&\n    bind 127.0.0.1:8481 ssl crt '"$LAST/haproxy.pem"' alpn h2,http/1.1|' \
  "$SHARED/peers/haproxy.cfg" >"$LAST/haproxy.cfg"
grep -q '^    bind 127.0.0.1:8481 ssl crt ' "$LAST/haproxy.cfg" || { echo "could not add the TLS bind to $SHARED/peers/haproxy.cfg" >&2; exit 1; }
NBTHREAD=1 HAPROXY_PORT=8081 haproxy -c -q -f "$LAST/haproxy.cfg"
sed -e 's|^    bind 127.0.0.1:8481 ssl |    bind 127.0.0.1:8482 ssl |' "$LAST/haproxy.cfg" >"$LAST/haproxy2.cfg"
NBTHREAD=2 HAPROXY_PORT=8082 haproxy -c -q -f "$LAST/haproxy2.cfg"
cat >"$LAST/sluice.yaml" <<EOF
listeners:
  - name: tls
    address: "127.0.0.1:8490"
    pool: web
    tls:
      certificates:
        - {cert: "$LAST/cert.pem", key: "$LAST/key.pem"}
  - name: h2c
    address: "127.0.0.1:8090"
    pool: web
    h2c: true
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
"$BIN_DIR/sluice" validate -config "$LAST/sluice.yaml"

sed -e 's/127.0.0.1:8490/127.0.0.1:8491/; s/127.0.0.1:8090/127.0.0.1:8091/; s/127.0.0.1:19190/127.0.0.1:19191/' \
  -e 's/^    pool: web$/&\n    engine: h1/' "$LAST/sluice.yaml" >"$LAST/sluice-h1.yaml"
"$BIN_DIR/sluice" validate -config "$LAST/sluice-h1.yaml"
{ sed -e 's/127.0.0.1:8490/127.0.0.1:8492/; s/127.0.0.1:8090/127.0.0.1:8092/; s/127.0.0.1:19190/127.0.0.1:19192/' "$LAST/sluice.yaml"
  echo "event_loops: 1"; } >"$LAST/sluice-1loop.yaml"
"$BIN_DIR/sluice" validate -config "$LAST/sluice-1loop.yaml"

log "starting backends (as ../shared/bench/start-peers.sh does), haproxy1 and sluice, unpinned"
start_backends 9001 9002 9003
NBTHREAD=1 HAPROXY_PORT=8081 "$SHARED/start-one.sh" haproxy1 -- haproxy -db -f "$LAST/haproxy.cfg"
"$SHARED/start-one.sh" sluice -- "$BIN_DIR/sluice" run -config "$LAST/sluice.yaml"
[[ $H1 == 1 ]] && "$SHARED/start-one.sh" sluice-h1 -- "$BIN_DIR/sluice" run -config "$LAST/sluice-h1.yaml"
[[ $HAP2 == 1 ]] && NBTHREAD=2 HAPROXY_PORT=8082 "$SHARED/start-one.sh" haproxy2 -- haproxy -db -f "$LAST/haproxy2.cfg"
[[ $ONE_LOOP == 1 ]] && "$SHARED/start-one.sh" sluice-1loop -- "$BIN_DIR/sluice" run -config "$LAST/sluice-1loop.yaml"
[[ $EVPROTO == 1 ]] && "$SHARED/start-one.sh" evproto -- "$BIN_DIR/evproto" -mode loop -listen 127.0.0.1:8098 \
  -h2c-listen 127.0.0.1:8097 -h2-tls-listen 127.0.0.1:8499 -cert "$LAST/cert.pem" -key "$LAST/key.pem" \
  -backends 127.0.0.1:9001,127.0.0.1:9002,127.0.0.1:9003
sleep 1

# (evproto serves HTTP/2 only on these listeners)
for i in "${!NAMES[@]}"; do
  a=${TLS_ADDRS[$i]}; [[ ${NAMES[$i]} == evproto ]] || check_http --http1.1 "https://$a/" 1.1; check_http --http2 "https://$a/" 2
  a=${H2C_ADDRS[$i]}; check_http --http2-prior-knowledge "http://$a/" 2; [[ ${NAMES[$i]} == evproto ]] || check_http --http1.1 "http://$a/" 1.1
done
: >"$LAST/tls-params.txt"
for i in "${!NAMES[@]}"; do
  { echo "${NAMES[$i]} ${TLS_ADDRS[$i]}:"
    openssl s_client -connect "${TLS_ADDRS[$i]}" -alpn h2,http/1.1 </dev/null 2>/dev/null |
      grep -E '^(New,|Peer signature type|Server Temp Key|ALPN protocol)' | sed 's/^/  /'
  } >>"$LAST/tls-params.txt"
done
cat "$LAST/tls-params.txt"

# ---- 2. measurement helpers ---------------------------------------------------
BACKEND_PIDS=$(cat "$RUN_DIR"/backend-900[123].pid | paste -sd, -)
cpu_busy_idle() { awk '/^cpu /{idle=$5+$6; tot=0; for(i=2;i<=NF;i++) tot+=$i; print tot, idle, $9}' /proc/stat; }
target_of() { # $1=scenario $2=target index; nothing when the target does not serve the scenario
  [[ ${NAMES[$2]} == evproto && $1 != h2* ]] && return
  case $1 in h2c|http-ka) echo "http://${H2C_ADDRS[$2]}/";; *) echo "https://${TLS_ADDRS[$2]}/";; esac
}
# h2load prints no percentiles: compute them from its --log-file (start µs, status, duration µs
# per request); the rest from its summary on stdin. Output: a BENCHLINE as report.lua's.
h2load_line() {
  local p
  p=$(awk -F'\t' '$2 > 0 { print $3 }' "$1" | sort -n | awk '{ a[NR] = $1; s += $1 }
      function q(x,   i) { i = int(x * NR); if (i < x * NR) i++; if (i < 1) i = 1; return a[i] }
      END { if (NR == 0) print "-1 -1 -1 0 0"; else printf "%d %d %d %d %d\n", q(0.5), q(0.9), q(0.99), a[NR], s / NR }')
  awk -v p="$p" 'function us(x) { sub(/,$/, "", x); if (x ~ /us$/) return x+0; if (x ~ /ms$/) return x*1000; if (x ~ /s$/) return x*1e6; return x+0 }
    /^finished in/ { dur=us($3) }
    /^requests:/ { ok=$8; fail=$10; tmo=$14 }
    /^status codes:/ { st=$7+$9 }
    END { split(p, q, " "); rd = fail - tmo; if (rd < 0) rd = 0
          if (dur > 0) printf "BENCHLINE requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%d err_connect=0 err_read=%d err_write=0 err_status=%d err_timeout=%d bytes=0\n", ok, dur, q[1], q[2], q[3], q[4], q[5], rd, st, tmo }'
}
# one load run: $1=scenario $2=URL $3=seconds $4=raw output; "user sys" of the load tool on fd 3
load_run() {
  local TIMEFORMAT='%U %S' s=$1 u=$2 d=$3 raw=$4
  local wrk=(wrk -t"$THREADS" -c"$CONNS" -d"$d"s --timeout 5s --latency -s "$SHARED/report.lua")
  [[ -n $u ]] || return 0
  case $s in
    http-ka|https-ka) { time timeout -k 5 $((d + 30)) "${wrk[@]}" "$u" >"$raw" 2>&1 || true; } 2>&3 ;;
    tls-resume) { time timeout -k 5 $((d + 30)) "${wrk[@]}" -H 'Connection: close' "$u" >"$raw" 2>&1 || true; } 2>&3 ;;
    tls-full)   { time timeout -k 5 $((d + 30)) "$BIN_DIR/tlsload" -url "$u" -c "$CONNS" -d "$d"s >"$raw" 2>&1 || true; } 2>&3 ;;
    https-rate) { time timeout -k 5 $((d + 30)) "$BIN_DIR/tlsload" -keepalive -rate "$RATE" -url "$u" -c "$CONNS" -d "$d"s >"$raw" 2>&1 || true; } 2>&3 ;;
    h2-tls|h2c)
      rm -f "$raw.log"
      { time timeout -k 5 $((d + 30)) h2load -t"$THREADS" -c"$CONNS" -m"$STREAMS" -D"$d" --log-file="$raw.log" "$u" >"$raw" 2>&1 || true; } 2>&3
      h2load_line "$raw.log" <"$raw" >>"$raw"; rm -f "$raw.log" ;;
  esac
}
CSV=$LAST/runs.csv
echo "label,conns,round,name,rps,p50_ms,p90_ms,p99_ms,max_ms,requests,errors,proxy_cpu_s,req_per_cpu_s,wrk_cpu_s,backend_cpu_s,busy_pct,url,mean_ms,steal_pct,load1" >"$CSV"
# one measured run ($1=scenario $2=round $3=target index; interleave runs them in rounds), its
# row as ../shared/bench/run.sh writes them (+ load1)
measure_one() {
  local s=$1 r=$2 i=$3 n u raw t0 t1 b0 b1 tot0 idle0 st0 tot1 idle1 st1 wt line l1
  n=${NAMES[$i]}; u=$(target_of "$s" "$i"); raw=$LAST/raw/$s-r$r-$n.txt; l1=$(load1)
  [[ -n $u ]] || return 0
  t0=$(tree_ticks "$(pidof_t "$n")"); b0=$(tree_ticks "$BACKEND_PIDS"); read -r tot0 idle0 st0 < <(cpu_busy_idle)
  wt=$(load_run "$s" "$u" "$DURATION" "$raw" 3>&1)
  t1=$(tree_ticks "$(pidof_t "$n")"); b1=$(tree_ticks "$BACKEND_PIDS"); read -r tot1 idle1 st1 < <(cpu_busy_idle)
  line=$(grep '^BENCHLINE' "$raw" || true)
  if [[ -z $line ]]; then echo "!! $s r=$r $n: no result (see $raw)" >&2; tail -3 "$raw" >&2; return; fi
  awk -v label="$s" -v c="$CONNS" -v r="$r" -v n="$n" -v u="$u" -v l1="$l1" \
      -v dt=$((t1 - t0)) -v db=$((b1 - b0)) -v clk="$CLK" -v wt="$wt" \
      -v dtot=$((tot1 - tot0)) -v didle=$((idle1 - idle0)) -v dst=$((st1 - st0)) '
    { for (i=2;i<=NF;i++) { split($i, kv, "="); v[kv[1]]=kv[2] } }
    END {
      rps = v["requests"] / (v["duration_us"]/1e6)
      err = v["err_connect"]+v["err_read"]+v["err_write"]+v["err_timeout"]+v["err_status"]
      split(wt, w, " ")
      cpu = sprintf("%.2f", dt/clk); rpc = (dt>0) ? sprintf("%.0f", v["requests"]/(dt/clk)) : "NA"
      busy = (dtot>0) ? sprintf("%.0f", 100*(dtot-didle)/dtot) : "NA"
      steal = (dtot>0) ? sprintf("%.1f", 100*dst/dtot) : "NA"
      printf "%s,%s,%s,%s,%.0f,%s,%s,%s,%.3f,%d,%d,%s,%s,%.2f,%.2f,%s,%s,%.3f,%s,%s\n", label, c, r, n, rps,
        ms(v["p50_us"]), ms(v["p90_us"]), ms(v["p99_us"]), v["max_us"]/1000, v["requests"], err,
        cpu, rpc, w[1]+w[2], db/clk, busy, u, v["mean_us"]/1000, steal, l1 }
    function ms(x) { return (x < 0) ? "NA" : sprintf("%.3f", x/1000) }' <<<"$line" | tee -a "$CSV" |
    awk -F, '{printf "  %-10s r=%s %-9s %8s req/s  p50 %7s ms  p99 %7s ms  err %s  proxy-cpu %s s  req/cpu-s %s  busy %s%%  steal %s%%  load %s\n", $1,$3,$4,$5,$6,$8,$11,$12,$13,$16,$19,$20}'
}

# ---- 3. wait for a quiet machine, then the scenarios --------------------------
wait_quiet
sample_load %T

# http-ka and https-ka, when both are asked for, share their rounds (http-ka, https-ka, http-ka,
# ...) so that TLS's own cost per request is a difference of runs a minute apart
both_ka=0; [[ " $SCENARIOS " == *" http-ka "* && " $SCENARIOS " == *" https-ka "* ]] && both_ka=1
for s in $SCENARIOS; do
  group=("$s")
  if ((both_ka)); then
    case $s in http-ka) group=(http-ka https-ka);; https-ka) continue;; esac
  fi
  log "(${group[*]}) c=$CONNS$([[ $s == h2* ]] && echo " m=$STREAMS")$([[ $s == https-rate ]] && echo ", $RATE req/s offered"), $ROUNDS interleaved rounds of ${DURATION}s, load $(load1)"
  { echo "# ${group[*]} start: $(uptime)"; others; } >>"$LAST/load.txt"
  interleave measure_one "${group[@]}"
done
{ echo "# end of the measurements: $(uptime)"; } | tee -a "$LAST/load.txt"

# ---- 4. optional profile --------------------------------------------------------
if [[ $PROFILE == 1 ]]; then
  profile_begin
  for s in $SCENARIOS; do
    for i in "${!NAMES[@]}"; do
      n=${NAMES[$i]}; base=$LAST/perf/$s-$n
      [[ -n $(target_of "$s" "$i") ]] || continue
      log "profile: $s on $n, ${PROFILE_SECS}s of perf record under load"
      load_run "$s" "$(target_of "$s" "$i")" $((PROFILE_SECS + 4)) "$base.load.txt" 3>/dev/null &
      lp=$!; BGPIDS+=("$lp")
      sleep 2
      profile "$n" "$base" "$s" "$lp"
      sleep "$GAP"
    done
  done
fi
stop_sampler

# ---- 5. summary -------------------------------------------------------------
log "summary"
{
  echo "# sluice vs HAProxy over TLS and HTTP/2 — $(date -u +%FT%TZ)"
  echo
  echo "\`bench/tls.sh\` with ROUNDS=$ROUNDS DURATION=${DURATION}s CONNS=$CONNS STREAMS=$STREAMS$([[ ${QUICK:-0} == 1 ]] && echo " (QUICK=1)"); sluice $(git rev-parse --short=12 "$REV_FULL") (REV=$REV, built from git archive); $(machine); $(haproxy_version) with $(haproxy -vv 2>/dev/null | awk -F': ' '/^Running on OpenSSL version/ {print $2}'), $(wrk_version), $(h2load --version 2>/dev/null | head -1), $(go_version)."
  echo
  echo "TLS parameters negotiated (openssl s_client):"
  echo
  sed 's/^/    /' "$LAST/tls-params.txt"
  echo
  echo "Load (1-, 5-, 15-minute averages): $LOAD_BEFORE before; $LOAD_START when measuring began, after ${waited} s of waiting for the 1-minute load to fall below $LOAD_MAX (at most $LOAD_WAIT s); while measuring (this benchmark included), the 1-minute load sampled every 5 s: $(load_stats). The busiest other processes at each scenario's start: $LAST/load.txt."
  echo
  echo "Requests per proxy CPU-second, sluice ÷ haproxy1 in the same round (bench/tls.awk):"
  echo
  awk -F, -v ref=haproxy1 -v tgt=sluice -v streams="$STREAMS" -v rate="$RATE" -f "$ROOT/bench/stats.awk" -f "$ROOT/bench/tls.awk" "$CSV"
  if [[ " $SCENARIOS " == *" https-rate "* ]]; then
    # Its latencies compare equal loads only if every target kept up with the offered rate.
    echo
    awk -F, -v rate="$RATE" '$1 == "https-rate" { n[$4]++; if ($5 < 0.95 * rate) short[$4]++; if (!($4 in seen)) { seen[$4] = 1; o[++k] = $4 } }
      END { printf "At %s req/s offered (https-rate), rounds in which a target achieved less than 95 %% of it (unequal loads):", rate
            for (i = 1; i <= k; i++) printf " %s %d of %d%s", o[i], short[o[i]] + 0, n[o[i]], (i < k ? "," : ".\n") }' "$CSV"
  fi
  if [[ $EVPROTO == 1 ]]; then
    for ref in haproxy1 sluice; do
      echo
      echo "The event-loop prototype (bench/evproto), evproto ÷ $ref in the same round, HTTP/2 scenarios:"
      echo
      awk -F, '$1 == "label" || $1 ~ /^h2/' "$CSV" |
        awk -F, -v ref="$ref" -v tgt=evproto -v streams="$STREAMS" -v rate="$RATE" -f "$ROOT/bench/stats.awk" -f "$ROOT/bench/tls.awk"
    done
  fi
  if [[ $H1 == 1 ]]; then
    echo
    echo "sluice on its event loops (engine: loop, the default) ÷ sluice on the goroutine engine (engine: h1), same binary, same round:"
    echo
    awk -F, -v ref=sluice-h1 -v tgt=sluice -v streams="$STREAMS" -v rate="$RATE" -f "$ROOT/bench/stats.awk" -f "$ROOT/bench/tls.awk" "$CSV"
  fi
  if [[ $HAP2 == 1 ]]; then
    echo
    echo "Two threads each: sluice (one loop per CPU, its default) ÷ haproxy2 (nbthread 2), same round:"
    echo
    awk -F, -v ref=haproxy2 -v tgt=sluice -v streams="$STREAMS" -v rate="$RATE" -f "$ROOT/bench/stats.awk" -f "$ROOT/bench/tls.awk" "$CSV"
  fi
  if [[ $ONE_LOOP == 1 ]]; then
    echo
    echo "One thread each: sluice-1loop (event_loops: 1) ÷ haproxy1 (nbthread 1), same round:"
    echo
    awk -F, -v ref=haproxy1 -v tgt=sluice-1loop -v streams="$STREAMS" -v rate="$RATE" -f "$ROOT/bench/stats.awk" -f "$ROOT/bench/tls.awk" "$CSV"
  fi
  if [[ -s $LAST/perf/split.md ]]; then
    echo
    echo "Where each proxy's CPU goes (perf record -e cpu-clock, self time, % of the process's samples; bench/perfsplit.awk):"
    echo
    cat "$LAST/perf/split.md"
  fi
  echo
  shared_tables "$CSV"
} >"$LAST/summary.md"
echo
cat "$LAST/summary.md"
echo
echo "summary: $LAST/summary.md   runs: $CSV   raw: $LAST/raw/"
