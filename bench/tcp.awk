# tcp.awk — the summary tables of bench/tcp.sh. Per scenario and target: the work per proxy
# CPU-second (conn: connections, each one request; bulk: MiB relayed), the rate (per second of
# wall time), p99 and errors, medians over the rounds; then tgt (sluice) ÷ each other target per
# round, its median, min–max and spread ((max−min)/median).
#   awk -F, -v tgt=sluice -f bench/stats.awk -f bench/tcp.awk runs.csv
# runs.csv: scenario,round,name,requests,bytes,duration_us,p99_ms,errors,proxy_cpu_s,load1
function unit(s) { return (s == "conn") ? "connections" : "MiB" }
$1 == "scenario" { next }
{
  s = $1; r = $2; n = $3
  if (!(s in seen)) { seen[s] = 1; scen[++ns] = s }
  if (!((s, n) in tseen)) { tseen[s, n] = 1; tname[s, ++nt[s]] = n }
  if (!((s, r) in rseen)) { rseen[s, r] = 1; rnd[s, ++nr[s]] = r }
  u = (s == "conn") ? $4 : $5 / 1048576
  if ($9 > 0) { per[s, n, r] = u / $9; pc[s, n, ++npc[s, n]] = u / $9 }
  rate[s, n, ++nrate[s, n]] = u / ($6 / 1e6); p99[s, n, ++np99[s, n]] = $7; err[s, n] += $8
}
END {
  for (o = 1; o <= ns; o++) {
    s = scen[o]
    printf "%s — %s:\n\n", s, (s == "conn") ? "a new TCP connection per request (accept, connect, relay, close)" : "1 MiB responses relayed on keep-alive connections"
    printf "| target | %s per proxy CPU-s (median) | %s per second (median) | p99 ms (median) | errors |\n", unit(s), unit(s)
    print "|---|---:|---:|---:|---:|"
    for (k = 1; k <= nt[s]; k++) {
      n = tname[s, k]
      delete a; for (i = 1; i <= npc[s, n]; i++) a[i] = pc[s, n, i]
      delete b; for (i = 1; i <= nrate[s, n]; i++) b[i] = rate[s, n, i]
      delete c; for (i = 1; i <= np99[s, n]; i++) c[i] = p99[s, n, i]
      printf "| %s | %.0f | %.0f | %.2f | %d |\n", n, med(a, npc[s, n]), med(b, nrate[s, n]), med(c, np99[s, n]), err[s, n]
    }
    print ""
    printf "| %s ÷ | per round | median | min–max | spread |\n", tgt
    print "|---|---|---:|---:|---:|"
    for (k = 1; k <= nt[s]; k++) {
      n = tname[s, k]
      if (n == tgt) continue
      delete q; m = 0; list = ""
      for (i = 1; i <= nr[s]; i++) {
        r = rnd[s, i]
        if (((s, n, r) in per) && ((s, tgt, r) in per) && per[s, n, r] > 0) {
          q[++m] = per[s, tgt, r] / per[s, n, r]; list = list (list == "" ? "" : " ") sprintf("%.2f", q[m])
        }
      }
      if (m == 0) { printf "| %s | - | - | - | - |\n", n; continue }
      printf "| %s | %s | **%.2f** | %.2f–%.2f | %s |\n", n, list, med(q, m), lo(q, m), hi(q, m), spread(q, m)
    }
    print ""
  }
}
