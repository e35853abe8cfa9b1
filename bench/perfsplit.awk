# perfsplit.awk — where a proxy's CPU goes, from a perf profile's self time by symbol:
#   perf report -i F --no-children --sort dso,sym -g none --stdio |
#     awk -v label=h2-tls -v target=sluice -f bench/perfsplit.awk
# prints one markdown row (header with -v header=1 and no input) of percentages of all samples:
#   kernel       everything in [kernel.kallsyms] (system calls, TCP over loopback, scheduling)
#   TLS protocol crypto/tls (Go) or libssl (OpenSSL): records, handshake state machine
#   crypto       the primitives: crypto/... other than crypto/tls, x/crypto (Go), libcrypto (OpenSSL)
#   own code     the proxy's own code: github.com/sluice-lb/sluice/... (and package main, so
#                bench/evproto's own functions) or the haproxy binary
#   HTTP/2 lib   golang.org/x/net/http2 and hpack (sluice serves clients' HTTP/2 with it)
#   net/http     net/http, net/textproto (the codec beneath x/net/http2's handlers)
#   GC/alloc     Go runtime: allocation, garbage collection, stack scanning and growth
#   runtime      the rest of the Go runtime: scheduler, channels, select, locks, timers,
#                netpoll, maps, memmove (with the runtime's internal/ packages)
#   syscall/io   Go syscall entry, internal/poll, net, os, golang.org/x/sys/unix
#   other        everything else: libc (malloc, locks) for HAProxy; other Go standard library
#                (context, sync, bufio), vdso, unknown
# Kernel symbols are not split further: in this VM, cpu-clock samples in the kernel skid to
# the point where interrupts are re-enabled (pvm_irq_enable), so only the total is meaningful.
function cat(dso, sym) {
  if (dso ~ /kernel/ || kind == "[k]") return "kernel"
  if (dso ~ /^libssl/) return "tls"
  if (dso ~ /^libcrypto/) return "crypto"
  if (dso ~ /^haproxy/) return "own"
  if (sym ~ /^crypto\/tls\./) return "tls"
  if (sym ~ /^(crypto\/|vendor\/golang\.org\/x\/crypto\/|golang\.org\/x\/crypto\/)/) return "crypto"
  if (sym ~ /^github\.com\/sluice-lb\/sluice\// || sym ~ /^main\./) return "own"
  if (sym ~ /^(vendor\/)?golang\.org\/x\/net\/http2\//) return "h2"
  if (sym ~ /^net\/(http|textproto)[.\/]/) return "nethttp"
  if (sym ~ /^(internal\/runtime\/syscall|syscall\.|internal\/poll\.|net\.|os\.|golang\.org\/x\/sys\/unix\.)/) return "sys"
  if (sym ~ /^(runtime\.|internal\/runtime\/|aeshashbody|memeqbody|cmpbody|indexbytebody|countbody|gcWriteBarrier)/ || sym ~ /^runtime\./) {
    if (sym ~ /malloc|[gG][cC]|scan|[mM]ark|sweep|[sS]pan|heap|mcache|mcentral|wbBuf|[bB]arrier|newobject|greyobject|findObject|memclrNoHeapPointers|growslice|makeslice|unwinder|pcvalue|runtime\.step|findfunc|funcInfo|copystack|newstack|morestack|stackpool|stackalloc|stackfree|typePointers|nextFree/) return "gc"
    return "rt"
  }
  return "other"
}
BEGIN {
  n = split("kernel tls crypto own h2 nethttp gc rt sys other", order, " ")
  if (header) {
    print "| scenario | target | kernel | TLS protocol | crypto | own code | HTTP/2 lib | net/http | Go GC/alloc | Go runtime | syscall/io | other (libc, Go std) |"
    print "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    exit
  }
}
/^#/ || NF < 4 || $1 !~ /%$/ { next }
{
  pct = $1; sub(/%$/, "", pct)
  dso = $2; kind = $3
  sym = $0; sub(/^[^\[]*\[[.k]\] /, "", sym)
  s[cat(dso, sym)] += pct; total += pct
}
END {
  if (header) exit
  line = "| " label " | " target
  for (i = 1; i <= n; i++) line = line " | " sprintf("%.1f", s[order[i]])
  print line " |"
}
