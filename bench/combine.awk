# combine.awk — one summary table from the shared summarize.awk output plus
# bench/run.sh's own RSS / idle-connection lines.  Used by bench/run.sh (after bench/stats.awk,
# for the scenario names; rate = the offered req/s of the fixed-rate scenario):
#   awk -v ref=haproxy1 -v rate=4000 -v chart=OUT.tsv -f bench/stats.awk -f bench/combine.awk summarize-tables.md rss.tsv idle.tsv
# Inputs (told apart by their shape):
#   summarize.awk markdown rows  | label | conns | target | req/s | spread | p50 | p99 | mean | x base | x ref | x ref spread | cpu-s | req/cpu-s | busy | steal | errors |
#   rss.tsv   rss<TAB>label<TAB>conns<TAB>target<TAB>peak_kB
#   idle.tsv  idle<TAB>n<TAB>target<TAB>before_kB<TAB>peak_kB<TAB>ok<TAB>failed<TAB>alive_at_end
# Writes the chart TSV (PANEL, TARGET, VALUE) to `chart` when given.
function mib(kb) { return (kb == "" || kb == "-") ? "-" : sprintf("%.1f", kb / 1024) }
function ratio(a, b) { return (a == "" || a == "-" || b == "" || b == "-" || b + 0 == 0) ? "-" : sprintf("%.2f", a / b) }
BEGIN { FS = "\t" }
/^\| / && $0 !~ /^\| label/ {
  n = split($0, f, "|"); for (i = 1; i <= n; i++) gsub(/^ +| +$/, "", f[i])
  k = f[2] SUBSEP f[3]
  if (!(k in seenk)) { seenk[k] = 1; keys[++nk] = k }
  t = f[4]; if (!((k, t) in has)) { has[k, t] = 1; tg[k, ++ntg[k]] = t }
  rps[k, t] = f[5]; p50[k, t] = f[7]; p99[k, t] = f[8]; rpc[k, t] = f[14]; err[k, t] = f[17]; xr[k, t] = f[11]
  next
}
$1 == "rss" { peak[$2 SUBSEP $3, $4] = $5; next }
$1 == "idle" {
  in_n = $2; it[++nit] = $3; ib[$3] = $4; ip[$3] = $5; iok[$3] = $6; ifail[$3] = $7; ialive[$3] = $8; next
}
END {
  print "| scenario | target | req/s | x " ref " | p50 ms | p99 ms | req per proxy CPU-s | x " ref " | peak RSS MiB | x " ref " | errors |"
  print "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
  for (o = 1; o <= nk; o++) {
    k = keys[o]; split(k, kk, SUBSEP)
    for (j = 1; j <= ntg[k]; j++) {
      t = tg[k, j]
      printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", scenario(kk[1], kk[2], rate), t, rps[k, t], xr[k, t],
        p50[k, t], p99[k, t], rpc[k, t], ratio(rpc[k, t], rpc[k, ref]), mib(peak[k, t]), ratio(peak[k, t], peak[k, ref]), err[k, t]
      if (kk[1] == "small") {
        pa = pa sprintf("req/s, 100 B responses, c=%s\t%s\t%s\n", kk[2], t, rps[k, t])
        pb = pb sprintf("requests per proxy CPU-second, 100 B responses, c=%s\t%s\t%s\n", kk[2], t, rpc[k, t])
      }
      if (kk[1] == "kb64")
        pb = pb sprintf("requests per proxy CPU-second, 64 KiB responses, c=%s\t%s\t%s\n", kk[2], t, rpc[k, t])
      if (kk[1] == "rate")
        pb = pb sprintf("requests per proxy CPU-second, 100 B responses, %s req/s offered, c=%s\t%s\t%s\n", rate, kk[2], t, rpc[k, t])
    }
    if (chart != "") { printf "%s%s", pa, pb > chart }
    pa = pb = ""
  }
  for (i = 1; i <= nit; i++) {
    t = it[i]
    printf "| %s idle keep-alive clients | %s | - | - | - | - | - | - | %s (before %s) | %s | %d of %d not held (%d failed to open, %d closed by the proxy) |\n",
      in_n, t, mib(ip[t]), mib(ib[t]), ratio(ip[t], ip[ref]), in_n - ialive[t], in_n, ifail[t], iok[t] - ialive[t]
  }
  if (chart != "") {
    for (i = 1; i <= nit; i++) printf "peak RSS MiB, %s idle keep-alive clients\t%s\t%s\n", in_n, it[i], mib(ip[it[i]]) > chart
  }
}
