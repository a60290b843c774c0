#!/usr/bin/env bash
# Idle-connections benchmark (docs/bench-idle.md). Builds nothing.
#
# Starts Tern (`tern dev`, or `tern node` + `tern edge` with --split), connects
# N idle WebSocket subscribers to ONE channel from several 127.0.0.x source
# addresses, waits idle, reads the edge's RSS per connection, then publishes a
# broadcast of a few messages, one at a time, and checks that every subscriber
# got every message, in order, once.
#
#   tests/bench/run_idle.sh [--subscribers N] [--build DIR] [--split]
#                           [--workers W] [--procs P]
#                           [--source-addrs LIST] [--connect-rate R]
#                           [--messages M] [--idle-ms T] [--keep]
#
#   --subscribers N     idle WebSocket subscribers (100000)
#   --build DIR         where tern and tests/bench/bench_fanout are (./build)
#   --split             `tern node` + `tern edge` (clients on the edge), not `tern dev`
#   --workers W         with --split: `tern edge --workers W`, W processes sharing the
#                       port (default: ceil(N / (hard nofile limit - 1100)))
#   --procs P           bench_fanout processes holding the subscribers
#                       (default: ceil(N / (hard nofile limit - 1100)))
#   --source-addrs LIST subscribers' local addresses, for bench_fanout
#                       (default: 127.0.0.2 on, one address per 7 000 subscribers)
#   --connect-rate R    connections started per second (6000: the target is 5 000
#                       achieved, first connect to last subscribe OK)
#   --messages M        broadcast messages, each sent once the last reached everyone (3)
#   --idle-ms T         idle wait before RSS is read (5000)
#   --keep              keep the temp dir (config, logs, bench output)
#
# Targets: zero loss, >= 5 000 connections/s, edge RSS <= 4 096 bytes per idle
# connection. Exit: 0 when all are met, 1 when one is missed or cannot be run
# here (e.g. RLIMIT_NOFILE too low), 2 on bad usage, 77 when tern is missing.
# Every wait is bounded; only processes this script started are stopped, by PID.
set -uo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
build="$repo/build"
subs=100000 split=0 addrs="" crate=6000 messages=3 idle_ms=5000 keep=0 workers="" procs=""
while [ $# -gt 0 ]; do
  case "$1" in
    --subscribers) subs=$2; shift 2 ;;
    --build) build=$2; shift 2 ;;
    --split) split=1; shift ;;
    --workers) workers=$2; shift 2 ;;
    --procs) procs=$2; shift 2 ;;
    --source-addrs) addrs=$2; shift 2 ;;
    --connect-rate) crate=$2; shift 2 ;;
    --messages) messages=$2; shift 2 ;;
    --idle-ms) idle_ms=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,33p' "$0"; exit 0 ;;
    *) echo "run_idle: unknown argument $1" >&2; exit 2 ;;
  esac
done
for v in "$subs" "$crate" "$messages" "$idle_ms" ${workers:+"$workers"} ${procs:+"$procs"}; do
  [[ $v =~ ^[0-9]+$ ]] && [ "$v" -gt 0 ] || { echo "run_idle: bad number $v" >&2; exit 2; }
done
[ "$subs" -le 200000 ] || { echo "run_idle: --subscribers is at most 200000" >&2; exit 2; }
[ -z "$procs" ] || [ "$procs" -le 64 ] || { echo "run_idle: --procs is at most 64" >&2; exit 2; }
[ -z "$workers" ] || [ "$split" = 1 ] || { echo "run_idle: --workers needs --split" >&2; exit 2; }
tern=$build/tern
bench=$build/tests/bench/bench_fanout
[ -x "$tern" ] || { echo "run_idle: no $tern" >&2; exit 77; }
[ -x "$bench" ] || { echo "run_idle: no $bench" >&2; exit 2; }
. "$repo/tests/bench/lib_server.sh"

target=$([ "$split" = 1 ] && echo split || echo dev)
if [ -z "$addrs" ]; then
  n=$(( (subs + 6999) / 7000 ))
  [ "$n" -le 64 ] || n=64
  addrs="127.0.0.2-$((n + 1))"
fi
[[ $addrs =~ ^127\.[0-9.,-]+$ ]] || { echo "run_idle: --source-addrs must be in 127.0.0.0/8" >&2; exit 2; }

# Descriptors: one per subscriber in the process that holds it, plus headroom
# for links, listeners and the store. The harness spreads its subscribers
# over P processes and the split edge over W workers, so each needs its share:
# by default as many processes as it takes for each to fit the hard limit.
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)
fit=$([ "$nofile" = unlimited ] && echo "$subs" || echo $((nofile - 1100)))
[ "$fit" -gt 0 ] || fit=1
share() { echo $(( (subs + $1 - 1) / $1 )); }   # share COUNT: ceil(N / COUNT)
[ -n "$procs" ] || procs=$(share "$fit")
[ "$procs" -le 64 ] || procs=64
[ "$procs" -le "$subs" ] || procs=$subs
workers=${workers:-$([ "$split" = 1 ] && share "$fit" || echo 1)}
server_procs=$([ "$split" = 1 ] && echo "$workers" || echo 1)
need=$(( $(share "$server_procs") + 1100 ))       # the busiest server process
need_harness=$(( $(share "$procs") + 1100 ))      # each harness process
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), kernel $(uname -r)"
echo "ulimit_n=$nofile need=$need need_harness=$need_harness procs=$procs workers=$server_procs"
echo "sysctl: ip_local_port_range=$(tr '\t' ' ' </proc/sys/net/ipv4/ip_local_port_range)" \
  "somaxconn=$(cat /proc/sys/net/core/somaxconn)" \
  "tcp_max_syn_backlog=$(cat /proc/sys/net/ipv4/tcp_max_syn_backlog)" \
  "file-max=$(cat /proc/sys/fs/file-max)" \
  "nf_conntrack_max=$(cat /proc/sys/net/netfilter/nf_conntrack_max 2>/dev/null || echo none)"
echo "source_addrs=$addrs"

report_targets() { # ZERO_LOSS CONNECT RSS (MET, MISSED or NOT_RUN)
  echo "target_zero_loss=$1"
  echo "target_connect_rate_5000=$2"
  echo "target_rss_per_conn_4096=$3"
  if [ "$subs" -lt 100000 ]; then echo "target_100k=NOT_RUN (--subscribers $subs)"; fi
}

capeff=$(awk '/^CapEff/ {print $2}' /proc/self/status)
sysres=$(( (16#$capeff >> 24) & 1 ))
caps="raising it needs CAP_SYS_RESOURCE, which this shell $([ $sysres = 1 ] && echo has || echo "lacks (CapEff $capeff)")"
blocked() { # WHY: says why it cannot run here, and the targets NOT_RUN
  echo "run_idle: BLOCKED: $1"
  report_targets NOT_RUN NOT_RUN NOT_RUN
  exit 1
}
if [ "$nofile" != unlimited ] && [ "$nofile" -lt "$need" ]; then
  if [ "$split" = 0 ]; then
    blocked "RLIMIT_NOFILE hard limit is $(ulimit -Hn), under the $need descriptors one process (the edge, and the harness) needs for $subs connections; $caps. About $((nofile - 1100)) subscribers fit: try --subscribers $((nofile - 1100))."
  fi
  blocked "RLIMIT_NOFILE hard limit is $(ulimit -Hn), under the $need descriptors each of $workers edge workers needs for $subs connections; $caps. Try --workers $(share "$fit")."
fi
if [ "$nofile" != unlimited ] && [ "$nofile" -lt "$need_harness" ]; then
  blocked "RLIMIT_NOFILE hard limit is $(ulimit -Hn), under the $need_harness descriptors each of $procs harness processes needs for $subs connections; $caps. Try --procs $(share "$fit")."
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tern-bench-idle.XXXXXX")
pids=()   # "role:pid" in start order
stop_target() {
  local i
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do stop_pid "${pids[$i]#*:}" "${pids[$i]%%:*}" 30; done
  pids=()
}
on_exit run_idle stop_target

# Heartbeats stay at the contract's 15 s: idle connections still get them.
printf 'heartbeat_ms 15000\n' >"$tmp/tern.conf"
port=$(free_port)
if [ "$split" = 0 ]; then
  "$tern" dev --listen "127.0.0.1:$port" --data "$tmp/data" --config "$tmp/tern.conf" \
    >"$tmp/dev.log" 2>&1 &
  pids=("dev:$!")
  wait_healthz "$!" "$port" "tern dev" || { tail -5 "$tmp/dev.log" >&2; exit 1; }
else
  np=$(free_port)
  "$tern" node --id n1 --listen "127.0.0.1:$np" --data "$tmp/data" --config "$tmp/tern.conf" \
    >"$tmp/node.log" 2>&1 &
  pids=("node:$!")
  wait_healthz "$!" "$np" "tern node" || { tail -5 "$tmp/node.log" >&2; exit 1; }
  # With W > 1 the pid is the supervisor; its W workers are its children,
  # share the port (SO_REUSEPORT), and are counted with it.
  wflag=()
  [ "$workers" -gt 1 ] && wflag=(--workers "$workers")
  "$tern" edge --region local --listen "127.0.0.1:$port" --nodes "127.0.0.1:$np" \
    "${wflag[@]}" --config "$tmp/tern.conf" >"$tmp/edge.log" 2>&1 &
  pids+=("edge:$!")
  wait_healthz "$!" "$port" "tern edge" || { tail -5 "$tmp/edge.log" >&2; exit 1; }
fi
main_pid=${pids[-1]#*:}   # dev, or the edge: the process clients talk to
# Its start line and open files limit (an edge's workers log lines of their own first).
grep -m1 'listening on' "$tmp/${pids[-1]%%:*}.log"
grep -m1 'open files limit' "$tmp/${pids[-1]%%:*}.log"

# snap TAG: per process TAG ROLE CPU_TICKS SOCKETS RSS_KIB, into $tmp/snaps;
# a process's children (the edge's workers) as ROLE.wPID.
snap() {
  local rp kid
  for rp in "${pids[@]}"; do
    echo "$1 ${rp%%:*} $(proc_cpu_ticks "${rp#*:}") $(proc_sockets "${rp#*:}") $(proc_rss_kib "${rp#*:}")"
    for kid in $(pgrep -P "${rp#*:}"); do
      echo "$1 ${rp%%:*}.w$kid $(proc_cpu_ticks "$kid") $(proc_sockets "$kid") $(proc_rss_kib "$kid")"
    done
  done >>"$tmp/snaps"
}
: >"$tmp/snaps"
connect_ms=$(( subs * 1000 / 5000 * 2 + 30000 ))   # twice the time at 5 000/s, + 30 s
bound_s=$(( connect_ms / 1000 + idle_ms / 1000 + messages * 30 + 120 ))
args=(--port "$port" --server-pid "$main_pid" --subscribers "$subs" --source-addrs "$addrs"
      --connect-rate "$crate" --connect-concurrency 512 --connect-timeout-ms "$connect_ms"
      --settle-ms "$idle_ms" --mode inflight1 --messages "$messages"
      --message-timeout-ms 30000 --drain-timeout-ms 30000 --drain-max-ms 60000
      --label "idle-$target-$subs" --verbose)
[ "$procs" -gt 1 ] && args+=(--procs "$procs")
echo "bench_fanout ${args[*]}"
# Phase lines on stderr trigger snapshots: 2 idle (every subscriber in),
# 3 broadcast starts (after the idle wait), 5 the last delivery is in.
{ timeout "$bound_s" "$bench" "${args[@]}" 2>&1 >"$tmp/bench.out"; echo $? >"$tmp/rc"; } |
  while IFS= read -r line; do
    case $line in
      "bench_fanout: phase 2 "*) snap idle; ss -s | sed -n '1,2p' | sed 's/^/# ss: /' >>"$tmp/ss" ;;
      "bench_fanout: phase 3 "*) snap pub ;;
      "bench_fanout: phase 5 "*) snap end ;;
      "bench_fanout: phase "*) ;;
      *) printf '%s\n' "$line" >>"$tmp/bench.err" ;;
    esac
  done
rc=$(cat "$tmp/rc" 2>/dev/null || echo 1)
out=$tmp/bench.out
get() { sed -n "s/^$1=//p" "$out" | head -1; }
grep -E '^(result|reason|subscribed|connect_failed|closed_by_broker|published|expected_deliveries|deliveries|lost|duplicated|reordered|seq_gaps|connect_s|connect_rate_per_s|deliver_s|latency_us_p50|latency_us_p99|latency_us_max|broker_cpu_us_per_delivery|broker_connect_cpu_us_per_conn|broker_rss_before_kib|broker_rss_after_kib|broker_rss_bytes_per_conn|harness_maxrss_kib)=' "$out"
[ -s "$tmp/ss" ] && cat "$tmp/ss"
[ -s "$tmp/bench.err" ] && sed 's/^/# /' "$tmp/bench.err" | head -10
for rp in "${pids[@]}"; do
  if ! kill -0 "${rp#*:}" 2>/dev/null; then echo "# ${rp%%:*} died during the run"; rc=1; fi
done
# Per process: sockets and RSS while idle, CPU per delivery over the broadcast.
awk -v d="$(get deliveries)" -v tck="$(getconf CLK_TCK)" '
  $1 == "idle" { s[$2] = $4; r[$2] = $5 } $1 == "pub" { a[$2] = $3 } $1 == "end" { b[$2] = $3 }
  END { for (k in b) printf "%s: sockets_idle=%s rss_idle_kib=%s cpu_us_per_delivery=%.3f\n",
          k, s[k], r[k], (d > 0 ? (b[k] - a[k]) * 1e6 / tck / d : 0) }' "$tmp/snaps" | sort
stop_target

met() { [ "$1" = 1 ] && echo MET || echo MISSED; }
z=$([ "$rc" = 0 ] && [ "$(get result)" = PASS ] && [ "$(get lost)" = 0 ] && echo 1 || echo 0)
c=$(awk -v r="$(get connect_rate_per_s)" -v s="$(get subscribed)" -v n="$subs" \
  'BEGIN { print (s == n && r >= 5000) ? 1 : 0 }')
m=$(awk -v b="$(get broker_rss_bytes_per_conn)" -v s="$(get subscribed)" -v n="$subs" \
  'BEGIN { print (s == n && b != "" && b <= 4096) ? 1 : 0 }')
report_targets "$(met "$z")" "$(met "$c")" "$(met "$m")"
[ "$z$c$m" = 111 ] || exit 1
exit 0
