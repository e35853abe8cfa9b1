# evproto.awk — the table of bench/evproto.sh (issue 15): per scenario and target, requests per
# proxy CPU-second, as ratios to haproxy1 and to sluice in the same round, and p99.
#   awk -F, -v ref=haproxy1 -v eng=sluice -f bench/stats.awk -f bench/evproto.awk A/runs.csv B/runs.csv ...
# Ratios are per round (the same round of the interleaving, so drift of the machine cancels),
# then the median over rounds, with min–max and spread = (max−min)/median.
function range(a, n) {
  if (n == 0) return "–"
  return sprintf("%.2f (%.2f–%.2f, %s)", med(a, n), lo(a, n), hi(a, n), spread(a, n))
}
function scen(label, conns) {
  if (label == "small") return "100 B, c=" conns
  if (label == "kb64") return "64 KiB, c=" conns
  if (label == "rate") return "100 B, fixed rate, c=" conns
  return label ", c=" conns
}
$1 == "label" { next }
{
  k = $1 SUBSEP $2
  if (!(k in seenk)) { seenk[k] = 1; keys[++nk] = k }
  if (!((k, $4) in has)) { has[k, $4] = 1; tg[k, ++ntg[k]] = $4 }
  nr[k, $4]++; rv[k, $4, nr[k, $4]] = $3
  v[k, $4, $3] = ($13 == "NA" || $13 == "") ? 0 : $13
  p99[k, $4, $3] = $8; rps[k, $4, $3] = $5; errs[k, $4] += $11
}
END {
  print "| scenario | target | rounds | req/s (median) | req per proxy CPU-s (median) | proxy µs/req | x " ref " per round: median (min–max, spread) | x " eng " per round | p99 ms (median) | p99 x " ref " | errors |"
  print "|---|---|---:|---:|---:|---:|---|---|---:|---|---:|"
  for (o = 1; o <= nk; o++) {
    k = keys[o]; split(k, kk, SUBSEP)
    for (j = 1; j <= ntg[k]; j++) {
      t = tg[k, j]; delete a; delete x; delete y; delete p; delete q; delete s; na = nx = ny = np = nq = ns = 0
      for (i = 1; i <= nr[k, t]; i++) {
        r = rv[k, t, i]
        s[++ns] = rps[k, t, r]
        if (v[k, t, r] > 0) a[++na] = v[k, t, r]
        if (v[k, t, r] > 0 && v[k, ref, r] > 0) x[++nx] = v[k, t, r] / v[k, ref, r]
        if (t != eng && v[k, t, r] > 0 && v[k, eng, r] > 0) y[++ny] = v[k, t, r] / v[k, eng, r]
        if (p99[k, t, r] != "NA") { p[++np] = p99[k, t, r]; if (p99[k, ref, r] != "NA" && p99[k, ref, r] > 0) q[++nq] = p99[k, t, r] / p99[k, ref, r] }
      }
      m = med(a, na); pm = med(p, np)
      printf "| %s | %s | %d | %.0f | %s | %s | %s | %s | %s | %s | %d |\n", scen(kk[1], kk[2]), t, nr[k, t], med(s, ns),
        (m == "NA") ? "-" : sprintf("%.0f", m), (m == "NA") ? "-" : sprintf("%.1f", 1e6 / m),
        (t == ref) ? "1.00" : range(x, nx), (t == eng) ? "1.00" : range(y, ny),
        (pm == "NA") ? "-" : sprintf("%.1f", pm), (t == ref) ? "1.00" : range(q, nq), errs[k, t]
    }
  }
}
