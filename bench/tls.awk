# tls.awk — the summary table of bench/tls.sh: per scenario, requests per proxy CPU-second of
# `ref` (haproxy1) and `tgt` (sluice), the per-round ratio tgt ÷ ref (every round, median,
# min–max, spread = (max−min)/median), p99 of each and its per-round ratio, proxy µs per request,
# errors, and the 1-minute load average at the start of the runs. With both http-ka and https-ka,
# a second table: what TLS itself costs each proxy per keep-alive request, its median proxy
# µs/req in https-ka minus that in http-ka (and the same difference round by round).
#   awk -F, -v ref=haproxy1 -v tgt=sluice -f bench/stats.awk -f bench/tls.awk runs.csv
# runs.csv has the columns of ../shared/bench/run.sh plus load1 (column 20).
function f(x, fmt) { return (x == "NA" || x == "") ? "-" : sprintf(fmt, x) }
function scen(l) {
  if (l == "http-ka") return "plain HTTP/1.1 keep-alive, no TLS (wrk; reference)"
  if (l == "https-ka") return "HTTPS keep-alive, HTTP/1.1 (wrk)"
  if (l == "https-rate") return "HTTPS keep-alive at " rate " req/s offered, open loop (tlsload)"
  if (l == "tls-full") return "new connection + full TLS 1.3 handshake per request (tlsload)"
  if (l == "tls-resume") return "new connection per request, session resumed (wrk `Connection: close`)"
  if (l == "h2-tls") return "HTTP/2 over TLS, m=" streams " (h2load)"
  if (l == "h2c") return "HTTP/2 cleartext (h2c), m=" streams " (h2load)"
  return l
}
$1 == "label" { next }
{
  l = $1
  if (!(l in seen)) { seen[l] = 1; labels[++nl] = l; conns[l] = $2 }
  rounds[l, $3] = 1; if (!((l, $3) in rseen)) { rseen[l, $3] = 1; rl[l, ++nrl[l]] = $3 }
  rpc[l, $4, $3] = $13; p99[l, $4, $3] = $8; err[l, $4] += $11
  if ($10 > 0 && $12 != "NA") { us[l, $4, ++nus[l, $4]] = $12 / $10 * 1e6; usr[l, $4, $3] = $12 / $10 * 1e6 }
  if ($20 != "") { ld[l, ++nld[l]] = $20 }
}
END {
  print "| scenario | c | " ref " req per proxy CPU-s | " tgt " req per proxy CPU-s | " tgt " ÷ " ref ", per round | median | min–max | spread | p99 ms " ref " | p99 ms " tgt " | p99 " tgt " ÷ " ref " (median of rounds) | proxy µs/req " ref " / " tgt " | errors " ref " / " tgt " | load1 at start (min–max) |"
  print "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  for (o = 1; o <= nl; o++) {
    l = labels[o]
    delete ra; delete pa; delete rr; delete pr; delete ar; delete bp; delete cp; delete u1; delete u2; delete la
    na = nb = nr = np = 0; per = ""
    for (k = 1; k <= nrl[l]; k++) {
      r = rl[l, k]
      a = rpc[l, ref, r]; b = rpc[l, tgt, r]
      if (a != "" && a != "NA") ar[++na] = a
      if (b != "" && b != "NA") bp[++nb] = b
      if (a != "" && a != "NA" && a > 0 && b != "" && b != "NA") { rr[++nr] = b / a; per = per (per == "" ? "" : " ") sprintf("%.2f", b / a) }
      a = p99[l, ref, r]; b = p99[l, tgt, r]
      if (a != "" && a != "NA" && a > 0 && b != "" && b != "NA") pr[++np] = b / a
    }
    nc1 = nc2 = 0
    for (k = 1; k <= nus[l, ref]; k++) u1[++nc1] = us[l, ref, k]
    for (k = 1; k <= nus[l, tgt]; k++) u2[++nc2] = us[l, tgt, k]
    nq = 0; for (k = 1; k <= nld[l]; k++) la[++nq] = ld[l, k]
    delete q1; delete q2; n1 = n2 = 0
    for (k = 1; k <= nrl[l]; k++) { r = rl[l, k]; if (p99[l, ref, r] != "NA" && p99[l, ref, r] != "") q1[++n1] = p99[l, ref, r]; if (p99[l, tgt, r] != "NA" && p99[l, tgt, r] != "") q2[++n2] = p99[l, tgt, r] }
    printf "| %s | %s | %s | %s | %s | **%s** | %s | %s | %s | %s | %s | %s / %s | %d / %d | %s |\n",
      scen(l), conns[l], f(med(ar, na), "%.0f"), f(med(bp, nb), "%.0f"), (per == "" ? "-" : per),
      f(med(rr, nr), "%.2f"), (nr ? sprintf("%.2f–%.2f", lo(rr, nr), hi(rr, nr)) : "-"), spread(rr, nr),
      f(med(q1, n1), "%.2f"), f(med(q2, n2), "%.2f"), (np ? sprintf("%.2f (%.2f–%.2f)", med(pr, np), lo(pr, np), hi(pr, np)) : "-"),
      f(med(u1, nc1), "%.1f"), f(med(u2, nc2), "%.1f"), err[l, ref], err[l, tgt],
      (nq ? sprintf("%.2f (%.2f–%.2f)", med(la, nq), lo(la, nq), hi(la, nq)) : "-")
  }
  if (!(("http-ka") in seen) || !(("https-ka") in seen)) exit
  # TLS's own cost: the same proxy's µs/req with TLS minus without, from the medians over rounds
  # (per-round differences are listed too: a difference of two noisy runs, so read the medians)
  for (t = 1; t <= 2; t++) {
    nm = (t == 1) ? ref : tgt
    delete x; delete y; delete z; nx = ny = nz = 0; dl[t] = ""
    for (k = 1; k <= nrl["https-ka"]; k++) {
      r = rl["https-ka", k]
      if (("https-ka", nm, r) in usr) y[++ny] = usr["https-ka", nm, r]
      if (("http-ka", nm, r) in usr) x[++nx] = usr["http-ka", nm, r]
      if ((("https-ka", nm, r) in usr) && (("http-ka", nm, r) in usr)) dl[t] = dl[t] (dl[t] == "" ? "" : " ") sprintf("%+.1f", usr["https-ka", nm, r] - usr["http-ka", nm, r])
    }
    mx[t] = med(x, nx); my[t] = med(y, ny)
  }
  print ""
  print "| TLS's own CPU per keep-alive request | " ref " | " tgt " |"
  print "|---|---:|---:|"
  printf "| proxy µs/req without TLS (http-ka, median of rounds) | %s | %s |\n", f(mx[1], "%.1f"), f(mx[2], "%.1f")
  printf "| proxy µs/req with TLS (https-ka, median of rounds) | %s | %s |\n", f(my[1], "%.1f"), f(my[2], "%.1f")
  printf "| **TLS's own cost**, difference of the medians | **%s** | **%s** |\n", f(my[1] - mx[1], "%.1f"), f(my[2] - mx[2], "%.1f")
  printf "| the same difference in each round (runs a minute apart) | %s | %s |\n", dl[1], dl[2]
}
