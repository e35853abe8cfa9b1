# bench/idle.awk — summary of bench/idle.sh's idle.tsv: per target the median over rounds
# (min–max) of peak RSS, the peak ÷ haproxy1's of the same round, KiB per held connection
# ((peak − before) ÷ held), and sluice's Go stack and heap in use half way through the hold.
function med(a, n,   i, j, t) {
  for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j - 1] > a[j]; j--) { t = a[j]; a[j] = a[j - 1]; a[j - 1] = t }
  return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
function span(k, fmt,   i, n, a, lo, hi) {
  n = cnt[k]; if (n == 0) return "-"
  lo = hi = v[k, 1]
  for (i = 1; i <= n; i++) { a[i] = v[k, i]; if (a[i] < lo) lo = a[i]; if (a[i] > hi) hi = a[i] }
  return n == 1 ? sprintf(fmt, a[1]) : sprintf(fmt " (" fmt "–" fmt ")", med(a, n), lo, hi)
}
function add(k, x) { v[k, ++cnt[k]] = x }
NR == 1 { next }
{
  r = $1; t = $2; if (!(t in seen)) { seen[t] = 1; order[++nt] = t }
  peak[r, t] = $5; add(t SUBSEP "peak", $5 / 1024); add(t SUBSEP "before", $4 / 1024); add(t SUBSEP "held", $6)
  if ($6 > 0) add(t SUBSEP "per", ($5 - $4) / $6)
  if ($7 != "-") { add(t SUBSEP "stack", $7 / 1024); add(t SUBSEP "heap", $8 / 1024); add(t SUBSEP "gr", $9) }
  rounds[r] = 1
}
END {
  for (r in rounds) for (i = 1; i <= nt; i++) if (peak[r, "haproxy1"] > 0) add(order[i] SUBSEP "ratio", peak[r, order[i]] / peak[r, "haproxy1"])
  print "| target | held | RSS before MiB | peak RSS MiB | peak ÷ haproxy1 | KiB per held connection | Go stack in use MiB | Go heap in use MiB | goroutines |"
  print "|---|---:|---:|---:|---:|---:|---:|---:|---:|"
  for (i = 1; i <= nt; i++) {
    t = order[i]
    printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", t, span(t SUBSEP "held", "%d"), span(t SUBSEP "before", "%.1f"),
      span(t SUBSEP "peak", "%.1f"), span(t SUBSEP "ratio", "%.2f"), span(t SUBSEP "per", "%.2f"),
      span(t SUBSEP "stack", "%.1f"), span(t SUBSEP "heap", "%.1f"), span(t SUBSEP "gr", "%d")
  }
}
