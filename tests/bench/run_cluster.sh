#!/usr/bin/env bash
# Split-vs-dev fan-out benchmark (docs/bench-cluster.md). Builds nothing.
#
# Runs the same bench_fanout workloads, in one run, against two targets:
#   dev    one `tern dev` process (node and edge in one process, loopback link)
#   split  `tern node` + `tern edge` as two processes, clients on the edge
# Each workload runs on a fresh target (fresh data dir, free 127.0.0.1 ports).
# CPU per delivery is taken for EACH process (utime+stime from /proc/PID/stat)
# over the same window bench_fanout uses for its own broker figure: from the
# start of publishing to the last delivery (its `phase 3` and `phase 5` lines
# on stderr, read as they come). Socket counts (/proc/PID/fd) and RSS are read
# at the start of publishing, with every subscriber connected.
#
#   tests/bench/run_cluster.sh [--build DIR] [--quick] [--only REGEX]
#                              [--links K] [--set 'KEY VAL'] [--keep]
#
#   --build DIR     where tern and tests/bench/bench_fanout are (./build)
#   --quick         shorter workloads (about 5 s of publishing each; a few
#                   minutes in all)
#   --only REGEX    only workloads whose name matches (grep -E)
#   --links K       pass --links K to `tern edge`
#   --set 'KEY VAL' one more config line for every process (repeatable)
#   --keep          keep temp dirs and logs
#
# Exit: 0 when every run passed (zero loss), 1 when one failed, 2 on bad
# usage, 77 when the tern binary is missing.
set -uo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
build="$repo/build"
quick=0 only="" links="" keep=0
extra_conf=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --quick) quick=1; shift ;;
    --only) only=$2; shift 2 ;;
    --links) links=$2; shift 2 ;;
    --set) extra_conf+=("$2"); shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,26p' "$0"; exit 0 ;;
    *) echo "run_cluster: unknown argument $1" >&2; exit 2 ;;
  esac
done
tern=$build/tern
bench=$build/tests/bench/bench_fanout
[ -x "$tern" ] || { echo "run_cluster: no $tern" >&2; exit 77; }
[ -x "$bench" ] || { echo "run_cluster: no $bench" >&2; exit 2; }
. "$repo/tests/bench/lib_server.sh"

# 10 000 subscribers: 10 000 descriptors in the harness and in the edge (or
# dev). One source address is enough: 10 000 connections to one server port
# fit in the ephemeral range (net.ipv4.ip_local_port_range).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 10200 ]; then
  echo "run_cluster: ulimit -n is $(ulimit -n); 10 000-subscriber workloads will fail" >&2
fi
tck=$(getconf CLK_TCK)

# name subscribers mode messages rate burst duration_ms
if [ "$quick" = 1 ]; then
  workloads=(
    "n1000-inflight1   1000 inflight1   300    0 1  5000"
    "n1000-rate1000    1000 rate       5000 1000 1  5000"
    "n10000-inflight1 10000 inflight1    40    0 1  5000"
    "n10000-rate100   10000 rate        500  100 1  5000"
  )
else
  workloads=(
    "n1000-inflight1   1000 inflight1  3000    0 1 20000"
    "n1000-rate100     1000 rate       2000  100 1 20000"
    "n1000-rate1000    1000 rate      20000 1000 1 20000"
    "n1000-rate1000x8  1000 rate      20000 1000 8 20000"
    "n10000-inflight1 10000 inflight1   400    0 1 20000"
    "n10000-rate100   10000 rate       2000  100 1 20000"
  )
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tern-bench-cluster.XXXXXX")
pids=()   # "role:pid" of the running target, in start order
stop_target() {
  local i
  # Edge first (reverse start order), then the node.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    stop_pid "${pids[$i]#*:}" "${pids[$i]%%:*}"
  done
  pids=()
}
on_exit run_cluster stop_target

# start_target TARGET DIR: starts dev or node+edge; sets pids and port (the
# port clients use). 0 when every process answers /healthz.
start_target() {
  local target=$1 dir=$2 p np
  mkdir -p "$dir"
  printf 'session_queue_max_bytes 8388608\nheartbeat_ms 15000\n' >"$dir/tern.conf"
  for line in "${extra_conf[@]}"; do printf '%s\n' "$line" >>"$dir/tern.conf"; done
  port=$(free_port)
  if [ "$target" = dev ]; then
    "$tern" dev --listen "127.0.0.1:$port" --data "$dir/data" --config "$dir/tern.conf" \
      >"$dir/dev.log" 2>&1 &
    p=$!; pids=("dev:$p")
    wait_healthz "$p" "$port" "tern dev" || { tail -5 "$dir/dev.log" >&2; return 1; }
    return 0
  fi
  np=$(free_port)
  "$tern" node --id n1 --listen "127.0.0.1:$np" --data "$dir/data" --config "$dir/tern.conf" \
    >"$dir/node.log" 2>&1 &
  p=$!; pids=("node:$p")
  wait_healthz "$p" "$np" "tern node" || { tail -5 "$dir/node.log" >&2; return 1; }
  "$tern" edge --region local --listen "127.0.0.1:$port" --nodes "127.0.0.1:$np" \
    ${links:+--links "$links"} --config "$dir/tern.conf" >"$dir/edge.log" 2>&1 &
  p=$!; pids+=("edge:$p")
  wait_healthz "$p" "$port" "tern edge" || { tail -5 "$dir/edge.log" >&2; return 1; }
  return 0
}

# snap TAG FILE: one line per process: TAG ROLE CPU_TICKS [SOCKETS RSS_KIB].
snap() {
  local tag=$1 file=$2 rp
  for rp in "${pids[@]}"; do echo "$tag ${rp%%:*} $(proc_cpu_ticks "${rp#*:}")"; done >>"$file"
  if [ "$tag" = pub ]; then
    for rp in "${pids[@]}"; do
      echo "sock ${rp%%:*} $(proc_sockets "${rp#*:}") $(proc_rss_kib "${rp#*:}")"
    done >>"$file"
  fi
}

status=0
rows=()
declare -A cpu_total p99 rate
for w in "${workloads[@]}"; do
  read -r name subs mode messages wrate burst dur <<<"$w"
  if [ -n "$only" ] && ! grep -Eq "$only" <<<"$name"; then continue; fi
  for target in dev split; do
    dir="$tmp/$name-$target"
    echo "workload=$name target=$target"
    if ! start_target "$target" "$dir"; then
      status=1; stop_target
      rows+=("$name|$subs|$target|FAIL (start)"); continue
    fi
    main_pid=${pids[-1]#*:}   # dev, or the edge: the process clients talk to
    args=(--port "$port" --server-pid "$main_pid" --subscribers "$subs" --mode "$mode"
          --messages "$messages" --duration-ms "$dur" --label "$name" --verbose)
    [ "$mode" = rate ] && args+=(--rate "$wrate" --burst "$burst")
    out="$dir/bench.out" snaps="$dir/snaps"
    : >"$snaps"
    # stderr is read line by line as it comes: the phase lines trigger the
    # /proc snapshots, everything else goes to bench.err.
    { timeout 180 "$bench" "${args[@]}" 2>&1 >"$out"; echo $? >"$dir/rc"; } |
      while IFS= read -r line; do
        case $line in
          "bench_fanout: phase 3 "*) snap pub "$snaps" ;;
          "bench_fanout: phase 5 "*) snap end "$snaps" ;;
          "bench_fanout: phase "*) ;;
          *) printf '%s\n' "$line" >>"$dir/bench.err" ;;
        esac
      done
    rc=$(cat "$dir/rc")
    grep -E '^(result|reason|deliveries|lost|duplicated|publish_rate_per_s|latency_us_p(50|99)|broker_cpu_us_per_delivery)=' "$out"
    [ -s "$dir/bench.err" ] && sed 's/^/# /' "$dir/bench.err" | head -10
    for rp in "${pids[@]}"; do
      if ! kill -0 "${rp#*:}" 2>/dev/null; then echo "# ${rp%%:*} died during the run"; rc=1; fi
    done
    stop_target
    [ "$rc" != 0 ] && status=1
    get() { sed -n "s/^$1=//p" "$out" | head -1; }
    d=$(get deliveries)
    # Per-process µs per delivery, the sum, sockets and RSS.
    percpu=$(awk -v d="${d:-0}" -v tck="$tck" '
      $1 == "pub" { a[$2] = $3 } $1 == "end" { b[$2] = $3 }
      $1 == "sock" { s[$2] = $3; r[$2] = $4 }
      END {
        tot = 0
        for (k in b) { u[k] = d > 0 ? (b[k] - a[k]) * 1e6 / tck / d : 0; tot += u[k] }
        if ("dev" in b) printf "%.2f|-|-|%.2f|%s|-|%s|-", u["dev"], tot, s["dev"], r["dev"]
        else printf "-|%.2f|%.2f|%.2f|%s|%s|%s|%s", u["edge"], u["node"], tot,
                    s["edge"], s["node"], r["edge"], r["node"]
      }' "$snaps")
    echo "cpu_us_per_delivery(dev|edge|node|total)=$(cut -d'|' -f1-4 <<<"$percpu") sockets(main|node)=$(cut -d'|' -f5-6 <<<"$percpu")"
    cpu_total[$name-$target]=$(cut -d'|' -f4 <<<"$percpu")
    p99[$name-$target]=$(get latency_us_p99)
    rate[$name-$target]=$(get publish_rate_per_s)
    rows+=("$name|$subs|$target|$(get result)|$(get deliveries_per_s)|$(get lost)/$(get duplicated)|$(get latency_us_p50)|$(get latency_us_p99)|$(get publish_rate_per_s)|$percpu")
    echo
  done
done

echo "summary (load: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores; CPU = utime+stime per delivery, publish start to last delivery)"
{
  echo "workload|subs|target|result|deliv/s|lost/dup|p50_us|p99_us|pub/s|dev_us|edge_us|node_us|total_us|main_sockets|node_sockets|main_rss_KiB|node_rss_KiB"
  for line in "${rows[@]}"; do echo "$line"; done
} | column -t -s '|'

echo
echo "split/dev total CPU per delivery (target <= 1.5x):"
for w in "${workloads[@]}"; do
  read -r name _ <<<"$w"
  a=${cpu_total[$name-split]:-} b=${cpu_total[$name-dev]:-}
  [ -n "$a" ] && [ -n "$b" ] || continue
  awk -v n="$name" -v a="$a" -v b="$b" 'BEGIN {
    if (b <= 0) { printf "ratio_%s=NOT_MEASURED\n", n; exit }
    r = a / b; printf "ratio_%s=%.2f (%s / %s us) %s\n", n, r, a, b, r <= 1.5 ? "MET" : "MISSED" }'
done
echo "p99 < 5 ms at 1 000 subscribers x 1 000 msgs/s (n1000-rate1000):"
for target in dev split; do
  v=${p99[n1000-rate1000-$target]:-} r=${rate[n1000-rate1000-$target]:-}
  if [ -z "$v" ]; then echo "target_p99_$target=NOT_RUN"; continue; fi
  awk -v t="$target" -v v="$v" -v r="$r" 'BEGIN {
    ok = v < 5000; carried = r >= 950
    printf "target_p99_%s=%s p99_us=%s rate_carried=%s msgs/s%s\n", t,
      (ok && carried) ? "MET" : "MISSED", v, r, carried ? "" : " (1 000/s not carried)" }'
done
echo "target_zero_loss=$([ $status = 0 ] && echo MET || echo MISSED)"
exit $status
