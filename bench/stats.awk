# stats.awk — the statistics over rounds that the bench tables share, loaded before each of
# combine.awk, rounds.awk, tcp.awk and tls.awk (awk -f bench/stats.awk -f bench/tls.awk ...).
# a[1..n] holds one value per round.

# med: the median ("NA" when n is 0)
function med(a, n,    i, j, x, b) {
  if (n == 0) return "NA"
  for (i = 1; i <= n; i++) b[i] = a[i]
  for (i = 2; i <= n; i++) { x = b[i]; j = i - 1; while (j > 0 && b[j] > x) { b[j+1] = b[j]; j-- } b[j+1] = x }
  return (n % 2) ? b[(n+1)/2] : (b[n/2] + b[n/2+1]) / 2
}
function lo(a, n,    i, m) { m = a[1]; for (i = 2; i <= n; i++) if (a[i] < m) m = a[i]; return m }
function hi(a, n,    i, m) { m = a[1]; for (i = 2; i <= n; i++) if (a[i] > m) m = a[i]; return m }
# spread: (max−min)/median as a percentage, "-" with fewer than two rounds or a median of 0
function spread(a, n,    m) { if (n < 2) return "-"; m = med(a, n); return (m > 0) ? sprintf("%.0f%%", 100 * (hi(a, n) - lo(a, n)) / m) : "-" }

# scenario: the name of a scenario of bench/run.sh and bench/evproto.sh in their tables, from the
# label and concurrency of its runs.csv rows (rate: the offered req/s of the fixed-rate scenario)
function scenario(label, conns, rate) {
  if (label == "small") return "100 B, c=" conns
  if (label == "kb64") return "64 KiB, c=" conns
  if (label == "fail") return "backend failure, c=" conns
  if (label == "rate") return "100 B, " ((rate > 0) ? rate " req/s" : "fixed rate") " offered, c=" conns
  return label ", c=" conns
}
