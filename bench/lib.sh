# bench/lib.sh — what the bench scripts (run.sh, tls.sh, tcp.sh, evproto.sh) share: sourced
# by each of them first thing, never run on its own.
#
# On sourcing: `set -euo pipefail`, ROOT (the repository) as the working directory, SHARED (the
# shared harness, ../shared/bench or $SHARED). The script then sets RUN_DIR and BIN_DIR (exported:
# the shared start-one.sh and stop-peers.sh read them), LAST (its output directory), NAMES (its
# targets, as started by start-one.sh) and, for the cleanup, STARTED (what stop-peers.sh ends),
# STOP_MSG (the last line printed) and CLEANUP_RM (directories removed at the end).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SHARED=$(cd "${SHARED:-$ROOT/../shared/bench}" && pwd)

log() { printf '\n== %s  %s\n' "$(date +%T)" "$*"; }

# ---- prerequisites ------------------------------------------------------------
# require TOOL[:PACKAGE]...: apt-get installs the packages of the tools missing from PATH (as
# root; otherwise says what is missing and exits), then checks that go is there.
require() {
  local t missing=()
  for t; do command -v "${t%%:*}" >/dev/null || missing+=("${t#*:}"); done
  if ((${#missing[@]})); then
    ((EUID == 0)) || { echo "missing ${missing[*]}; run as root (apt-get) or install them" >&2; exit 1; }
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  command -v go >/dev/null || { echo "go is needed" >&2; exit 1; }
}

# ports_free QUESTION PORT...: exits when something already listens on one of the loopback ports,
# saying "port P is already in use: QUESTION".
ports_free() {
  local q=$1 p; shift
  for p; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "port $p is already in use: $q" >&2; exit 1
    fi
  done
}

# commit_of VAR VALUE: the full commit VALUE names (VAR is the variable it came from, for the error)
commit_of() {
  git rev-parse --verify --quiet "$2^{commit}" || { echo "$1=$2 is not a commit of this repository" >&2; return 1; }
}

# ---- cleanup: always stop what we started -----------------------------------------
# stop_on_exit, called once the prerequisites are checked (not before: a second benchmark that
# finds its ports taken must not stop the first one's processes), makes every exit (the end, a
# failure, INT, TERM) stop SAMPLER (the PID of a background sampler, or ""), the background jobs
# in BGPIDS and the processes named in STARTED (never all of stop-peers.sh's: STARTED must not be
# empty), remove CLEANUP_RM and print STOP_MSG with the exit status.
SAMPLER=""; BGPIDS=(); CLEANUP_RM=(); STARTED=""; STOP_MSG="bench: stopped"
cleanup() {
  local rc=$? p
  set +e
  trap - EXIT INT TERM
  [[ -n $SAMPLER ]] && kill "$SAMPLER" 2>/dev/null
  for p in "${BGPIDS[@]}"; do kill "$p" 2>/dev/null; done
  # shellcheck disable=SC2086
  [[ -n $STARTED ]] && { "$SHARED/stop-peers.sh" $STARTED >/dev/null 2>&1 || true; }
  ((${#CLEANUP_RM[@]})) && rm -rf "${CLEANUP_RM[@]}"
  echo "$STOP_MSG (exit $rc)"
  exit "$rc"
}
stop_on_exit() {
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}
stop_sampler() { [[ -n $SAMPLER ]] && kill "$SAMPLER" 2>/dev/null; SAMPLER=""; }

# ---- build and start ------------------------------------------------------------------
# build_sluice ARGS...: `go build` of sluice as `make build` does it (CGO_ENABLED=0: a static
# binary, as shipped), so that the memory measured is the shipped binary's
build_sluice() { CGO_ENABLED=0 go build "$@"; }
# build_sluice_at COMMIT DIR BINARY: sluice as it is at COMMIT, from `git archive` into DIR
# (emptied first; the caller lists DIR in CLEANUP_RM), never from the working tree; with
# BASE_CGO=1 linked against libc (cgo), as a plain `go build` did before `make build` went static.
build_sluice_at() {
  rm -rf "$2"; mkdir -p "$2"
  git archive "$1" | tar -x -C "$2"
  (cd "$2" && if [[ ${BASE_CGO:-0} == 1 ]]; then go build -o "$3" ./cmd/sluice; else build_sluice -o "$3" ./cmd/sluice; fi)
}
# worktree_rev PATH...: HEAD's short commit, "+ uncommitted changes" when non-test files under
# the PATHs differ from it (for what is built from the working tree)
worktree_rev() {
  local rev; rev=$(git rev-parse --short=12 HEAD)
  if git status --porcelain -- "$@" | grep -v '_test\.go$' >/dev/null; then rev+=" + uncommitted changes"; fi
  echo "$rev"
}
build_backend() { (cd "$SHARED/backend" && go build -o "$BIN_DIR/backend" .); }
# start_backends PORT...: the shared backend on each loopback port, unpinned (as
# ../shared/bench/start-peers.sh starts them)
start_backends() {
  local p
  echo unpinned >"$RUN_DIR/MODE"
  for p; do "$SHARED/start-one.sh" "backend-$p" -- "$BIN_DIR/backend" -addr "127.0.0.1:$p"; done
}
pidof_t() { cat "$RUN_DIR/$1.pid"; }

# idle_fds: raises the descriptor limit of this script's children for IDLE_N idle clients
# (2 × IDLE_N + 1024), up to what the hard limit allows (a container may forbid raising that),
# and sets HAPROXY_MAXCONN to what HAProxy can then hold (it sizes its descriptors as
# 2 × maxconn + 14), at most IDLE_N + 100
idle_fds() {
  local want=$((IDLE_N * 2 + 1024))
  if (($(ulimit -n) < want)); then ulimit -Hn "$want" 2>/dev/null || true; ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"; fi
  HAPROXY_MAXCONN=$(( ($(ulimit -n) - 20) / 2 )); ((HAPROXY_MAXCONN > IDLE_N + 100)) && HAPROXY_MAXCONN=$((IDLE_N + 100))
  return 0
}
# haproxy_cfg_at PORT1 PORT2 PORT3 MAXCONN OUT: the shared peers/haproxy.cfg with its backends on
# the three loopback ports and maxconn MAXCONN, into OUT
haproxy_cfg_at() {
  sed -e "s/127\.0\.0\.1:9001/127.0.0.1:$1/; s/127\.0\.0\.1:9002/127.0.0.1:$2/; s/127\.0\.0\.1:9003/127.0.0.1:$3/" \
    -e "s/^\\( *maxconn\\) 8000\$/\\1 $4/" "$SHARED/peers/haproxy.cfg" >"$5"
  grep -q "maxconn $4\$" "$5" && grep -q "127.0.0.1:$3" "$5" ||
    { echo "could not adapt $SHARED/peers/haproxy.cfg (maxconn / backend ports)" >&2; exit 1; }
}

# check_http CURL_OPTION URL [VERSION]: six requests, each a 200, from all three backends (their
# X-Backend header), over HTTP VERSION when given; exits otherwise
check_http() {
  local codes="" backends="" ver="" out nb
  for _ in 1 2 3 4 5 6; do
    out=$(curl -sk -m 5 "$1" -o /dev/null -D - -w 'VERSION %{http_version}\n' "$2" | tr -d '\r')
    codes+="$(awk 'NR==1{print $2}' <<<"$out") "
    backends+="$(awk -F': ' 'tolower($1)=="x-backend"{print $2}' <<<"$out")"$'\n'
    ver=$(awk '$1=="VERSION"{print $2}' <<<"$out")
  done
  nb=$(grep -c . <<<"$(sort -u <<<"$backends")")
  if [[ -z ${3:-} ]]; then
    echo "check $2: codes $codes distinct backends $nb"
    [[ $codes == "200 200 200 200 200 200 " && $nb == 3 ]] || { echo "check failed: $2" >&2; exit 1; }
    return
  fi
  echo "check $2 $1: codes $codes HTTP/$ver, distinct backends $nb"
  [[ $codes == "200 200 200 200 200 200 " && $ver == "$3" && $nb == 3 ]] || { echo "check failed: $2 $1" >&2; exit 1; }
}

# ---- measurement -------------------------------------------------------------------
CLK=$(getconf CLK_TCK)
# tree_ticks PID,PID...: utime+stime clock ticks of the PIDs and all their descendants, from
# /proc/PID/stat (as ../shared/bench/run.sh computes it)
tree_ticks() {
  { cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v roots="$1" '
    { pid=$1; s=$0; sub(/^.*\) /, "", s); split(s, f, " "); pp[pid]=f[2]; t[pid]=f[12]+f[13] }
    END { n=split(roots, r, ","); for (i=1;i<=n;i++) if (r[i] in pp) in_t[r[i]]=1
          do { ch=0; for (p in pp) if (!(p in in_t) && (pp[p] in in_t)) { in_t[p]=1; ch=1 } } while (ch)
          s=0; for (p in in_t) s+=t[p]; print s }'
}
# rss_tree PID: VmRSS in kB of PID and all its descendants (nginx master + workers)
rss_tree() {
  local pid=$1 kb c
  kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
  kb=${kb:-0}
  for c in $(cat /proc/"$pid"/task/*/children 2>/dev/null || true); do kb=$((kb + $(rss_tree "$c"))); done
  echo "$kb"
}

# interleave RUN SCENARIO...: a warm-up of WARMUP seconds per scenario and target (when WARMUP > 0),
# then ROUNDS rounds, each running every scenario given on every target (NAMES, in order), GAP
# seconds apart. The script defines `load_run SCENARIO TARGET SECONDS RAW` (TARGET from
# `target_of SCENARIO INDEX`), and RUN, called as `RUN SCENARIO ROUND INDEX` for each measured run.
interleave() {
  local run=$1 s i r; shift
  if ((WARMUP > 0)); then
    for s; do
      for i in "${!NAMES[@]}"; do
        load_run "$s" "$(target_of "$s" "$i")" "$WARMUP" "$LAST/raw/warmup-$s-${NAMES[$i]}.txt" 3>/dev/null; sleep "$GAP"
      done
    done
  fi
  for r in $(seq "$ROUNDS"); do
    for s; do
      for i in "${!NAMES[@]}"; do "$run" "$s" "$r" "$i"; sleep "$GAP"; done
    done
  done
}

# idle_clients TARGET ADDR: IDLE_N idle keep-alive clients (bench/cmd/idleclients) on ADDR, held
# IDLE_HOLD seconds, output in $LAST/idle-TARGET.txt. Sets IDLE_BEFORE and IDLE_PEAK (RSS in kB of
# TARGET's process tree before and at most while they were held) and IDLE_OK, IDLE_FAILED,
# IDLE_ALIVE (what idleclients reported; empty when it did not).
idle_clients() {
  local n=$1 pid kb ic out=$LAST/idle-$1.txt
  pid=$(pidof_t "$n"); IDLE_BEFORE=$(rss_tree "$pid"); IDLE_PEAK=$IDLE_BEFORE
  timeout -k 5 $((IDLE_HOLD + 90)) "$BIN_DIR/idleclients" -addr "$2" -n "$IDLE_N" -hold "${IDLE_HOLD}s" \
    -c 500 -timeout 3s >"$out" 2>&1 &
  ic=$!; BGPIDS+=("$ic")
  while kill -0 "$ic" 2>/dev/null; do
    kb=$(rss_tree "$pid"); ((kb > IDLE_PEAK)) && IDLE_PEAK=$kb
    sleep 0.25
  done
  wait "$ic" || echo "idleclients for $n exited with an error (see $out)" >&2
  IDLE_OK=$(sed -n 's/.* ok=\([0-9]*\).*/\1/p' "$out" | head -1)
  IDLE_FAILED=$(sed -n 's/.* failed=\([0-9]*\).*/\1/p' "$out" | head -1)
  IDLE_ALIVE=$(sed -n 's/.* alive_at_end=\([0-9]*\).*/\1/p' "$out" | head -1)
}

# profile TARGET BASE LABEL LOADPID: `perf record -e cpu-clock -g` of TARGET for PROFILE_SECS
# seconds (under the load the caller started as LOADPID, waited for here), reports in
# BASE.self.txt and BASE.children.txt, CPU by category (bench/perfsplit.awk) appended to
# $LAST/perf/split.md (begun by profile_begin)
profile_begin() {
  mkdir -p "$LAST/perf"
  awk -v header=1 -f "$ROOT/bench/perfsplit.awk" </dev/null >"$LAST/perf/split.md"
}
profile() {
  local base=$2
  perf record -e cpu-clock -F 999 -g -p "$(pidof_t "$1")" -o "$base.data" -- sleep "$PROFILE_SECS" >/dev/null 2>&1 || true
  wait "$4" || true
  perf report -i "$base.data" --no-children --sort dso,sym -g none --stdio 2>/dev/null >"$base.self.txt" || true
  perf report -i "$base.data" --children --sort sym -g none --stdio 2>/dev/null >"$base.children.txt" || true
  awk -v label="$3" -v target="$1" -f "$ROOT/bench/perfsplit.awk" "$base.self.txt" >>"$LAST/perf/split.md"
  rm -f "$base.data"
}

# perfstat_begin: the table perfstat appends to, $LAST/perf/stat.md
perfstat_begin() {
  mkdir -p "$LAST/perf"
  echo "| target | requests | syscalls/req | read | write, writev | recvfrom, sendto | epoll_wait, epoll_pwait | epoll_ctl | futex | nanosleep | tgkill, rt_sigreturn | context switches/req | CPU µs/req (task-clock) |" >"$LAST/perf/stat.md"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|" >>"$LAST/perf/stat.md"
}
# perfstat TARGET ADDR BASE: `perf stat` of TARGET's system calls by kind, context switches
# and CPU over a wrk c=50 run of PROFILE_SECS seconds against ADDR (raw output BASE.stat and
# BASE.wrk.txt), per request, appended to $LAST/perf/stat.md
perfstat() {
  local sc=syscalls:sys_enter_ base=$3
  local ev=raw_syscalls:sys_enter,${sc}read,${sc}write,${sc}writev,${sc}recvfrom,${sc}sendto,${sc}epoll_wait,${sc}epoll_pwait,${sc}epoll_ctl,${sc}futex,${sc}nanosleep,${sc}tgkill,${sc}rt_sigreturn,context-switches,task-clock
  perf stat -x, -e "$ev" -p "$(pidof_t "$1")" -o "$base.stat" -- \
    wrk -t2 -c50 -d"${PROFILE_SECS}"s "http://$2/" >"$base.wrk.txt" 2>&1 || true
  awk -F, -v n="$1" -v reqs="$(awk '/requests in/ {print $1}' "$base.wrk.txt")" '
    $3 ~ /^(raw_syscalls|syscalls):sys_enter/ || $3 == "context-switches" || $3 == "task-clock" { e = $3; sub(/^.*sys_enter_?/, "", e); c[e == "" ? $3 : e] = $1 + 0 }
    function r(x) { return sprintf("%.2f", x / reqs) }
    END { if (reqs > 0) printf "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.3f | %.1f |\n", n, reqs, r(c["raw_syscalls:sys_enter"]),
      r(c["read"]), r(c["write"] + c["writev"]), r(c["recvfrom"] + c["sendto"]), r(c["epoll_wait"] + c["epoll_pwait"]), r(c["epoll_ctl"]),
      r(c["futex"]), r(c["nanosleep"]), r(c["tgkill"] + c["rt_sigreturn"]), c["context-switches"] / reqs, c["task-clock"] * 1000 / reqs }' "$base.stat" >>"$LAST/perf/stat.md"
}

# profile_target TARGET ADDR: perfstat, then perf record (profile) under a wrk c=50 load, of
# one running target; needs profile_begin and perfstat_begin first
profile_target() {
  local base=$LAST/perf/$1 lp
  log "profile: $1, perf stat over wrk c=50 for ${PROFILE_SECS}s, then perf record"
  perfstat "$1" "$2" "$base"
  sleep 1
  timeout -k 5 $((PROFILE_SECS + 30)) wrk -t2 -c50 -d$((PROFILE_SECS + 4))s "http://$2/" >/dev/null 2>&1 &
  lp=$!; BGPIDS+=("$lp")
  sleep 2
  profile "$1" "$base" small-c50 "$lp"
  sleep 1
}

# ---- the machine's load ------------------------------------------------------------
load1() { cut -d' ' -f1 /proc/loadavg; }
others() { # the busiest other processes right now (a 1 s sample)
  top -b -n 2 -d 1 -w 200 2>/dev/null | awk '/^top -/ { k++ } k == 2 && $1 ~ /^[0-9]+$/ && $9 > 5 { print "    " $9 "% " $12 }' | head -6
}
# wait_quiet: waits up to LOAD_WAIT seconds for the 1-minute load to fall below LOAD_MAX,
# recording the load and the busiest processes before and after in $LAST/load.txt; sets
# LOAD_BEFORE, LOAD_START (1-, 5-, 15-minute averages) and waited (seconds)
wait_quiet() {
  LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
  { echo "# load before measuring: $(uptime)"; others; } | tee "$LAST/load.txt"
  waited=0
  while awk -v l="$(load1)" -v m="$LOAD_MAX" 'BEGIN { exit !(l >= m) }'; do
    if ((waited >= LOAD_WAIT)); then log "1-minute load $(load1) is still >= $LOAD_MAX after ${waited}s: measuring anyway (noted)"; break; fi
    ((waited == 0)) && log "waiting up to ${LOAD_WAIT}s for the 1-minute load ($(load1)) to fall below $LOAD_MAX"
    sleep 15; waited=$((waited + 15))
  done
  LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
  { echo "# load at the start of the measurements (after ${waited}s of waiting): $(uptime)"; others; } | tee -a "$LAST/load.txt"
}
# sample_load DATEFORMAT: every 5 s, "TIME load1 load5 load15" (TIME as `date +DATEFORMAT`)
# appended to $LAST/load-samples.txt, in the background (SAMPLER)
sample_load() {
  ( while :; do echo "$(date +"$1") $(cut -d' ' -f1-3 /proc/loadavg)"; sleep 5; done >>"$LAST/load-samples.txt" ) & SAMPLER=$!
}
# load_stats [FROM TO]: "median M, min A, max B" of the 1-minute load samples (those with an
# epoch time from FROM to TO when given), "-" when there are none
load_stats() {
  awk -v a="${1:-}" -v b="${2:-}" 'a == "" || ($1 >= a && $1 <= b) { print $2 }' "$LAST/load-samples.txt" 2>/dev/null | sort -n |
    awk '{ v[NR] = $1 } END { if (!NR) { print "-"; exit } printf "median %s, min %s, max %s\n", v[int((NR+1)/2)], v[1], v[NR] }'
}

# ---- summary --------------------------------------------------------------------------
machine() { echo "$(nproc) CPUs ($(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)), kernel $(uname -r)"; }
haproxy_version() { haproxy -v 2>/dev/null | head -1 | awk '{print "HAProxy", $3}'; }
wrk_version() { wrk -v 2>&1 | head -1 | awk '{print $1, $2}'; }
go_version() { go version | awk '{print $3}'; }
# shared_tables CSV...: the shared harness's summarize.awk and cpusplit.awk tables of the runs,
# folded (the fold alone when no CSV is given)
shared_tables() {
  echo "<details><summary>summarize.awk and cpusplit.awk tables (shared harness)</summary>"
  echo
  (($#)) && awk -F, -v base=haproxy1 -v ref=haproxy1 -f "$SHARED/summarize.awk" "$@"
  echo
  (($#)) && awk -F, -f "$SHARED/cpusplit.awk" "$@"
  echo
  echo "</details>"
}
