#!/usr/bin/env bash
# bench/tlsstat.sh — system calls, context switches and CPU per request of HAProxy and of one or
# more sluice binaries, under the same fixed loads, one proxy after another (perf stat -p on the
# proxy while h2load sends a fixed number of requests).
#
# Run from the repository root, after bench/tls.sh (its certificate and configs are used, on
# ports of its own so that it can run beside bench/tls.sh or bench/run.sh: HAProxy 127.0.0.1:8881
# cleartext, :8882 TLS; sluice :8891 h2c, :8890 TLS, admin :19890; backends :9801-9803):
#   bench/tlsstat.sh NAME=SLUICE-BINARY ...      e.g. before=/tmp/s-a1eac00 after=/tmp/s-HEAD
# Environment:
#   CONF [/tmp/bench/tls/last]   haproxy.cfg and sluice.yaml as bench/tls.sh writes them
#   PASSES [2]        passes over the targets (haproxy1, NAME..., haproxy1, NAME..., ...)
#   N [40000]         requests measured per load (after WARM [10000] unmeasured ones)
#   LOADS ["h1 h1-tls h2-tls h2c"]   h1: HTTP/1.1 keep-alive (h2load --h1 -m1) cleartext,
#                     h1-tls: the same over TLS, h2-tls / h2c: HTTP/2 with -m STREAMS [10];
#                     LOAD:PATH requests PATH instead of URLPATH (e.g. h1-tls:/kb/8)
#   CONNS [50]        h2load -c
#   URLPATH [/]       the path requested (the backends serve /kb/N: N KiB bodies)
#   SHARED [../shared/bench]   the shared harness (backend, start-one.sh, stop-peers.sh)
# Output: one line per target, load and pass on stdout and in /tmp/bench/tlsstat/stat.csv
# (counts per request; cpu_us = task-clock µs per request). Stops what it started.
# shellcheck source=bench/lib.sh
source "$(dirname "$0")/lib.sh"
CONF=${CONF:-/tmp/bench/tls/last}; PASSES=${PASSES:-2}; N=${N:-40000}; WARM=${WARM:-10000}
LOADS=${LOADS:-"h1 h1-tls h2-tls h2c"}; CONNS=${CONNS:-50}; STREAMS=${STREAMS:-10}; URLPATH=${URLPATH:-/}
TOP=/tmp/bench/tlsstat
export RUN_DIR=$TOP/run BIN_DIR=$TOP/bin
(($#)) || { echo "usage: $0 NAME=SLUICE-BINARY ..." >&2; exit 2; }
for f in "$CONF/haproxy.cfg" "$CONF/sluice.yaml"; do
  [[ -s $f ]] || { echo "$f missing: run bench/tls.sh first (or set CONF)" >&2; exit 2; }
done
require haproxy h2load:nghttp2-client perf:linux-perf
ports_free "is another bench/tlsstat.sh running?" 9801 9802 9803 8881 8882 8890 8891 19890
STARTED="sluice haproxy1 backend-9801 backend-9802 backend-9803"
STOP_MSG="bench/tlsstat.sh: stopped what it started"
stop_on_exit
mkdir -p "$BIN_DIR" "$RUN_DIR"
build_backend
start_backends 9801 9802 9803
# bench/tls.sh's configs on this script's ports
sed -e 's/127\.0\.0\.1:8481 /127.0.0.1:8882 /; s/127\.0\.0\.1:900\([123]\)/127.0.0.1:980\1/' "$CONF/haproxy.cfg" >"$TOP/haproxy.cfg"
sed -e 's/127\.0\.0\.1:8490"/127.0.0.1:8890"/; s/127\.0\.0\.1:8090"/127.0.0.1:8891"/; s/127\.0\.0\.1:19190"/127.0.0.1:19890"/
        s|http://127\.0\.0\.1:900\([123]\)|http://127.0.0.1:980\1|' "$CONF/sluice.yaml" >"$TOP/sluice.yaml"
grep -q ':8882 ssl' "$TOP/haproxy.cfg" && grep -q ':8890"' "$TOP/sluice.yaml" && ! grep -qE ':(900[123]|8490|8090|19190)\b' "$TOP/haproxy.cfg" "$TOP/sluice.yaml" ||
  { echo "could not move the ports of $CONF/haproxy.cfg and sluice.yaml" >&2; exit 1; }

EV=raw_syscalls:sys_enter,syscalls:sys_enter_write,syscalls:sys_enter_writev,syscalls:sys_enter_sendto,syscalls:sys_enter_read,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_pwait,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_futex,syscalls:sys_enter_nanosleep,context-switches,task-clock
CSV=$TOP/stat.csv
echo "pass,target,load,syscalls,write,writev,sendto,read,recvfrom,epoll,futex,nanosleep,cs,cpu_us,load1" >"$CSV"
url() { # $1=load[:path] $2=target
  local t=8890 c=8891 URLPATH=$URLPATH; [[ $2 == haproxy1 ]] && t=8882 c=8881
  [[ $1 == *:* ]] && URLPATH=${1#*:}
  case ${1%%:*} in
    h1) echo "--h1 -m1 http://127.0.0.1:$c$URLPATH";;
    h1-tls) echo "--h1 -m1 https://127.0.0.1:$t$URLPATH";;
    h2-tls) echo "-m$STREAMS https://127.0.0.1:$t$URLPATH";;
    h2c) echo "-m$STREAMS http://127.0.0.1:$c$URLPATH";;
    *) echo "unknown load $1" >&2; exit 2;;
  esac
}
one() { # $1=pass $2=target name (pid file name) $3=label
  local l args out
  for l in $LOADS; do
    # shellcheck disable=SC2046
    args=$(url "$l" "$3")
    # shellcheck disable=SC2086
    h2load -n "$WARM" -c"$CONNS" -t2 $args >/dev/null
    # shellcheck disable=SC2086
    out=$(perf stat -x, -e "$EV" -p "$(pidof_t "$2")" -- h2load -n "$N" -c"$CONNS" -t2 $args 2>&1 >"$TOP/h2load.txt")
    grep -q "^requests: $N total, $N started, $N done, $N succeeded" "$TOP/h2load.txt" ||
      { echo "!! $3 $l: not every request succeeded:" >&2; grep -E '^(requests|status)' "$TOP/h2load.txt" >&2; }
    awk -F, -v p="$1" -v t="$3" -v l="$l" -v n="$N" -v l1="$(load1)" '
      { v[$3] = $1 }
      function c(k) { return sprintf("%.2f", v[k] / n) }
      END { printf "%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%.1f,%s\n", p, t, l,
              c("raw_syscalls:sys_enter"), c("syscalls:sys_enter_write"), c("syscalls:sys_enter_writev"),
              c("syscalls:sys_enter_sendto"), c("syscalls:sys_enter_read"), c("syscalls:sys_enter_recvfrom"),
              sprintf("%.2f", (v["syscalls:sys_enter_epoll_pwait"] + v["syscalls:sys_enter_epoll_wait"]) / n),
              c("syscalls:sys_enter_futex"), c("syscalls:sys_enter_nanosleep"), c("context-switches"),
              v["task-clock"] * 1000 / n, l1 }' <<<"$out" | tee -a "$CSV"
  done
}
for p in $(seq "$PASSES"); do
  NBTHREAD=1 HAPROXY_PORT=8881 "$SHARED/start-one.sh" haproxy1 -- haproxy -db -f "$TOP/haproxy.cfg" >/dev/null
  sleep 0.5; one "$p" haproxy1 haproxy1
  "$SHARED/stop-peers.sh" haproxy1 >/dev/null
  for a; do
    "$SHARED/start-one.sh" sluice -- "${a#*=}" run -config "$TOP/sluice.yaml" >/dev/null
    sleep 0.5; one "$p" sluice "${a%%=*}"
    "$SHARED/stop-peers.sh" sluice >/dev/null
  done
done
echo "per request, median of the passes (cpu_us = task-clock µs):"
sort -t, -k3,3 -k2,2 -k1,1n "$CSV" | awk -F, 'NR > 0 && $1 != "pass" {
    k = $3 "," $2; if (!(k in seen)) { seen[k] = 1; keys[++nk] = k } 
    n[k]++; sc[k, n[k]] = $4; cs[k, n[k]] = $13; cpu[k, n[k]] = $14 }
  function med(a, k, m,   i, j, t, x) { for (i = 1; i <= m; i++) x[i] = a[k, i]
    for (i = 2; i <= m; i++) for (j = i; j > 1 && x[j-1] + 0 > x[j] + 0; j--) { t = x[j]; x[j] = x[j-1]; x[j-1] = t }
    return (m % 2) ? x[(m+1)/2] : (x[m/2] + x[m/2+1]) / 2 }
  END { printf "%-8s %-14s %9s %8s %8s\n", "load", "target", "syscalls", "cs", "cpu_us"
    for (i = 1; i <= nk; i++) { k = keys[i]; split(k, kk, ",")
      printf "%-8s %-14s %9.2f %8.2f %8.1f\n", kk[1], kk[2], med(sc, k, n[k]), med(cs, k, n[k]), med(cpu, k, n[k]) } }'
