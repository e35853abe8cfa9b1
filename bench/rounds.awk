# rounds.awk — the per-round tables of bench/run.sh and bench/evproto.sh, from the shared
# harness's runs.csv files:
#   awk -F, -v ref=haproxy1 [-v eng=sluice-base] [-v tgt=sluice] [-v rate=4000] [-v reach=0.95] [-v pairs=1] \
#     -f bench/stats.awk -f bench/rounds.awk A/runs.csv B/runs.csv ...
# Ratios are per round (the same round of the interleaving, so drift of the machine cancels),
# then the median over rounds, with min–max and spread = (max−min)/median.
# First table, per scenario and target: achieved req/s, requests per proxy CPU-second, proxy
# µs/req, p99, and the per-round ratios of requests per CPU-second and of p99 to `ref` (and of
# requests per CPU-second to `eng` when given).
# (Not with pairs=1, which prints only the second.)
# Second table (when `tgt` is given): tgt ÷ ref per scenario, every round's ratio of requests per
# CPU-second and of p99 with their median, min–max and spread.
# The fixed-rate scenario (label "rate", `rate` req/s offered): a round in which a target achieved
# less than `reach` (0.95) of the offered rate is named in the req/s column, and every ratio that
# uses such a round is marked †: it compares unequal loads.
function range(a, n) {
  if (n == 0) return "–"
  return sprintf("%.2f (%.2f–%.2f, %s)", med(a, n), lo(a, n), hi(a, n), spread(a, n))
}
function rounds(a, n,    i, s) { for (i = 1; i <= n; i++) s = s (i > 1 ? " " : "") sprintf("%.2f", a[i]); return (n == 0) ? "–" : s }
# short: whether target t fell short of the offered rate in round r of scenario k
function short(k, t, r) { return ((k, t, r) in rps) && fixed[k] && rps[k, t, r] < reach * rate }
BEGIN { if (reach == "") reach = 0.95 }
$1 == "label" { next }
{
  k = $1 SUBSEP $2
  if (!(k in seenk)) { seenk[k] = 1; keys[++nk] = k; fixed[k] = ($1 == "rate" && rate > 0) }
  if (!((k, $4) in has)) { has[k, $4] = 1; tg[k, ++ntg[k]] = $4 }
  nr[k, $4]++; rv[k, $4, nr[k, $4]] = $3
  v[k, $4, $3] = ($13 == "NA" || $13 == "") ? 0 : $13
  p99[k, $4, $3] = $8; rps[k, $4, $3] = $5; errs[k, $4] += $11
}
# ratios k t other: fills x[1..nx] (requests per CPU-s, t ÷ other) and, with p = 1, q[1..nq] (p99,
# t ÷ other) over the rounds of t; sets unequal when one of them used a round short of the rate
function ratios(k, t, o, p,    i, r) {
  delete x; delete q; nx = nq = 0; unequal = 0
  for (i = 1; i <= nr[k, t]; i++) {
    r = rv[k, t, i]
    if (!((k, o, r) in rps)) continue
    if (short(k, t, r) || short(k, o, r)) unequal = 1
    if (v[k, t, r] > 0 && v[k, o, r] > 0) x[++nx] = v[k, t, r] / v[k, o, r]
    if (p && p99[k, t, r] != "NA" && p99[k, o, r] != "NA" && p99[k, o, r] > 0) q[++nq] = p99[k, t, r] / p99[k, o, r]
  }
}
function mark(s) { return (unequal && s != "–") ? s " †" : s }
END {
  if (pairs) { table2(); exit }
  printf "| scenario | target | rounds | req/s: median (min–max)%s | req per proxy CPU-s (median) | proxy µs/req | req per CPU-s x %s per round: median (min–max, spread) |%s p99 ms (median) | p99 x %s per round: median (min–max, spread) | errors |\n",
    (rate > 0) ? ", share of the offered rate" : "", ref, (eng != "") ? " req per CPU-s x " eng " per round |" : "", ref
  printf "|---|---|---:|---:|---:|---:|---|%s---:|---|---:|\n", (eng != "") ? "---|" : ""
  for (o = 1; o <= nk; o++) {
    k = keys[o]; split(k, kk, SUBSEP)
    for (j = 1; j <= ntg[k]; j++) {
      t = tg[k, j]; delete a; delete p; delete s; na = np = ns = nshort = 0
      for (i = 1; i <= nr[k, t]; i++) {
        r = rv[k, t, i]
        s[++ns] = rps[k, t, r]
        if (short(k, t, r)) { nshort++; anyshort = 1 }
        if (v[k, t, r] > 0) a[++na] = v[k, t, r]
        if (p99[k, t, r] != "NA") p[++np] = p99[k, t, r]
      }
      m = med(a, na); pm = med(p, np)
      got = sprintf("%.0f (%.0f–%.0f)", med(s, ns), lo(s, ns), hi(s, ns))
      if (fixed[k]) got = got sprintf(", %.0f %% of %d", 100 * med(s, ns) / rate, rate) (nshort ? sprintf(": **not reached** in %d of %d rounds", nshort, ns) : "")
      ratios(k, t, ref, 1); xr = (t == ref) ? "1.00" : mark(range(x, nx)); qr = (t == ref) ? "1.00" : mark(range(q, nq))
      xe = ""
      if (eng != "") { ratios(k, t, eng, 0); xe = " " ((t == eng) ? "1.00" : mark(range(x, nx))) " |" }
      printf "| %s | %s | %d | %s | %s | %s | %s |%s %s | %s | %d |\n", scenario(kk[1], kk[2], rate), t, nr[k, t], got,
        (m == "NA") ? "-" : sprintf("%.0f", m), (m == "NA") ? "-" : sprintf("%.1f", 1e6 / m), xr, xe,
        (pm == "NA") ? "-" : sprintf("%.1f", pm), qr, errs[k, t]
    }
  }
  if (anyshort) {
    print ""
    printf "† A ratio that uses a round in which a target achieved less than %.0f %% of the offered %d req/s: it compares unequal loads (lower RATE, or read it as a saturated run).\n", 100 * reach, rate
  }
  print ""
  table2()
}
function table2(    o, k, kk, i, r, n1, n2, load) {
  if (tgt == "") return
  print "| scenario | rounds | req per CPU-s " tgt " ÷ " ref ", every round | median | min–max | spread | p99 " tgt " ÷ " ref ", every round | median | min–max | spread | load |"
  print "|---|---:|---|---:|---:|---:|---|---:|---:|---:|---|"
  for (o = 1; o <= nk; o++) {
    k = keys[o]; split(k, kk, SUBSEP)
    if (!((k, tgt) in has) || !((k, ref) in has)) continue
    ratios(k, tgt, ref, 1); n1 = n2 = 0
    for (i = 1; i <= nr[k, tgt]; i++) { r = rv[k, tgt, i]; n1 += short(k, tgt, r); if ((k, ref, r) in rps) n2 += short(k, ref, r) }
    load = !fixed[k] ? "saturated (closed loop)" : (n1 + n2 == 0) ? "equal: both reached the offered rate in every round" : \
      sprintf("**unequal**: below %.0f %% of the offered rate in %d round(s) for %s, %d for %s", 100 * reach, n2, ref, n1, tgt)
    printf "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", scenario(kk[1], kk[2], rate), nx,
      rounds(x, nx), nx ? sprintf("%.2f", med(x, nx)) : "–", nx ? sprintf("%.2f–%.2f", lo(x, nx), hi(x, nx)) : "–", spread(x, nx),
      rounds(q, nq), nq ? sprintf("%.2f", med(q, nq)) : "–", nq ? sprintf("%.2f–%.2f", lo(q, nq), hi(q, nq)) : "–", spread(q, nq), load
  }
}
