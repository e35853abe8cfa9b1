# baseline.awk — requests per proxy CPU-second per round, as a ratio to haproxy1 in the same
# round, for a BASELINE run of bench/run.sh (sluice against sluice-base).  Used by bench/run.sh:
#   awk -F, -v ref=haproxy1 -f bench/stats.awk -f bench/baseline.awk small-c50/runs.csv ... fail/runs.csv
# For each scenario and target: the median req per proxy CPU-s, the per-round ratios to `ref`
# (median, min–max, spread = (max−min)/median, as summarize.awk), and for sluice the per-round
# ratio sluice / sluice-base (the same round, so machine drift cancels).
function range(a, n) {
  if (n == 0) return "- | - | -"
  return sprintf("%.2f | %.2f–%.2f | %s", med(a, n), lo(a, n), hi(a, n), spread(a, n))
}
function scen(label, conns) {
  if (label == "small") return "100 B, c=" conns
  if (label == "kb64") return "64 KiB, c=" conns
  if (label == "fail") return "backend failure, c=" conns
  return label ", c=" conns
}
$1 == "label" || $13 == "NA" || $13 == "" { next }
{
  k = $1 SUBSEP $2
  if (!(k in seenk)) { seenk[k] = 1; keys[++nk] = k }
  if (!((k, $4) in has)) { has[k, $4] = 1; tg[k, ++ntg[k]] = $4 }
  v[k, $4, $3] = $13; nr[k, $4]++; rv[k, $4, nr[k, $4]] = $3
}
END {
  print "| scenario | target | rounds | req per proxy CPU-s (median) | x " ref " (median of rounds) | min–max | spread | x sluice-base (median of rounds) | min–max | spread |"
  print "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  for (o = 1; o <= nk; o++) {
    k = keys[o]; split(k, kk, SUBSEP)
    for (j = 1; j <= ntg[k]; j++) {
      t = tg[k, j]; delete a; delete x; delete y; na = nx = ny = 0
      for (i = 1; i <= nr[k, t]; i++) {
        r = rv[k, t, i]; a[++na] = v[k, t, r]
        if (((k, ref, r) in v) && v[k, ref, r] > 0) x[++nx] = v[k, t, r] / v[k, ref, r]
        if (t == "sluice" && ((k, "sluice-base", r) in v) && v[k, "sluice-base", r] > 0) y[++ny] = v[k, t, r] / v[k, "sluice-base", r]
      }
      printf "| %s | %s | %d | %.0f | %s | %s |\n", scen(kk[1], kk[2]), t, na, med(a, na), range(x, nx), range(y, ny)
    }
  }
}
