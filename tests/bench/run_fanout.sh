#!/usr/bin/env bash
# Fan-out benchmark runner (docs/bench-fanout.md). Builds nothing.
#
# For each workload it starts a fresh `tern dev` on a free 127.0.0.1 port with
# a temporary data dir, runs bench_fanout against it with the server's PID
# (for CPU and RSS from /proc), stops the server by that PID, and at the end
# prints a summary table. Every bench_fanout line is printed as
# `key=value`, after a `workload=NAME` line.
#
#   tests/bench/run_fanout.sh [--build DIR] [--tern BIN] [--bench BIN]
#                             [--only PATTERN] [--smoke] [--set 'KEY VAL']
#                             [--pin] [--perf] [--keep]
#
#   --build DIR     where `tern` (or cluster/tern) and tests/bench/bench_fanout
#                   are (./build)
#   --only PATTERN  run only workloads whose name matches (grep -E)
#   --smoke         20 subscribers, a few messages per mode, and inflight1 over
#                   two harness processes (--procs 2): proves the harness
#   --set 'KEY VAL' add a line to the server's config (repeatable), e.g.
#                   --set 'store_sync normal'
#   --pin           server on CPU 0, harness on CPU 1 (taskset)
#   --syscalls      count the server's sendto/epoll_ctl/epoll_wait calls over
#                   each run (perf stat) and print them per delivery
#   --perf          record the server with `perf record -g` during each run
#   --keep          keep the temporary data dirs and server logs
#
# Exit status: 0 when every workload passed (zero loss), 1 when one failed,
# 2 on bad usage, 77 when the tern binary is missing (ctest: skipped).
set -uo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
build="$repo/build"
tern="" bench="" only="" smoke=0 keep=0 perf=0 pin=0 syscalls=0
extra_conf=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --tern) tern=$2; shift 2 ;;
    --bench) bench=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --smoke) smoke=1; shift ;;
    --set) extra_conf+=("$2"); shift 2 ;;
    --pin) pin=1; shift ;;
    --syscalls) syscalls=1; shift ;;
    --perf) perf=1; shift ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,28p' "$0"; exit 0 ;;
    *) echo "run_fanout: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$tern" ]; then
  tern=$build/tern
  [ -x "$tern" ] || tern=$build/cluster/tern
fi
bench=${bench:-$build/tests/bench/bench_fanout}
if [ ! -x "$tern" ]; then
  echo "run_fanout: no server binary at $tern (build the tern target first)" >&2
  exit 77
fi
if [ ! -x "$bench" ]; then
  echo "run_fanout: no bench_fanout at $bench (build the bench_fanout target first)" >&2
  exit 2
fi

# 10 000 subscribers need 10 000 descriptors in the server and in the harness.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 10200 ]; then
  echo "run_fanout: ulimit -n is $(ulimit -n); the 10 000-subscriber workloads will fail" >&2
fi

# Workloads: name subscribers mode messages rate burst [procs]. Each is bounded to
# about 20 s of publishing by bench_fanout's --duration-ms.
if [ "$smoke" = 1 ]; then
  workloads=(
    "smoke-inflight1     20 inflight1  50    0    1"
    "smoke-rate          20 rate       200   400  4"
    "smoke-procs2        20 inflight1  50    0    1    2"
  )
else
  workloads=(
    "n1000-inflight1   1000 inflight1  3000  0    1"
    "n1000-rate100     1000 rate       2000  100  1"
    "n1000-rate1000    1000 rate      20000  1000 1"
    "n1000-rate1000x8  1000 rate      20000  1000 8"
    "n10000-inflight1 10000 inflight1  400   0    1"
    "n10000-rate100   10000 rate       2000  100  1"
  )
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tern-bench-fanout.XXXXXX")
server_pid=""
perf_pid=""

stop_server() {
  if [ -n "$perf_pid" ]; then
    kill -INT "$perf_pid" 2>/dev/null
    wait "$perf_pid" 2>/dev/null
    perf_pid=""
  fi
  stop_pid "$server_pid" "tern dev"
  server_pid=""
}

# free_port, wait_healthz, stop_pid, bench_floor, on_exit: tests/bench/lib_server.sh
. "$repo/tests/bench/lib_server.sh"
on_exit run_fanout stop_server

# start_server NAME: starts tern dev, sets server_pid and port; 0 once /healthz
# answers, 1 when it exits or does not answer within 10 s.
start_server() {
  local name=$1 dir="$tmp/$1"
  mkdir -p "$dir/data"
  # Room for a burst of backlog per subscriber; heartbeats never fire in a run.
  printf 'session_queue_max_bytes 8388608\nheartbeat_ms 15000\n' >"$dir/tern.conf"
  for line in "${extra_conf[@]}"; do printf '%s\n' "$line" >>"$dir/tern.conf"; done
  port=$(free_port)
  "${server_pin[@]}" "$tern" dev --listen "127.0.0.1:$port" --data "$dir/data" --config "$dir/tern.conf" \
    >"$dir/server.log" 2>&1 &
  server_pid=$!
  if ! wait_healthz "$server_pid" "$port" "tern dev"; then
    tail -5 "$dir/server.log" >&2
    stop_server
    return 1
  fi
  if [ "$perf" = 1 ]; then
    perf record -g -o "$dir/perf.data" -p "$server_pid" >/dev/null 2>&1 &
    perf_pid=$!
  fi
  return 0
}

server_pin=() bench_pin=()
if [ "$pin" = 1 ]; then
  if [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
    server_pin=(taskset -c 0) bench_pin=(taskset -c 1)
  else
    echo "run_fanout: --pin needs taskset and 2 CPUs; running unpinned" >&2
  fi
fi

status=0
summary=()
declare -A floor1 floor8
# The kernel's floor now, on this machine, under its current load: CPU per
# message for one send() per message, and for 8 and 32 per send().
if [ "$smoke" = 0 ]; then
  for n in $(for w in "${workloads[@]}"; do read -r nm s _ <<<"$w"
             if [ -z "$only" ] || grep -Eq "$only" <<<"$nm"; then echo "$s"; fi; done | sort -un); do
    echo "workload=floor-$n"
    fout="$tmp/floor-$n.out"
    if f=$(bench_floor "$fout" "$n" "${bench_pin[@]}" "$bench"); then
      grep -v '^bench=' "$fout"
      read -r floor1[$n] floor8[$n] _ <<<"$f"
    fi
    echo
  done
fi
for w in "${workloads[@]}"; do
  read -r name subs mode messages rate burst procs <<<"$w"
  if [ -n "$only" ] && ! grep -Eq "$only" <<<"$name"; then continue; fi
  echo "workload=$name"
  if ! start_server "$name"; then
    status=1
    summary+=("$name|$subs|$mode|FAIL (server did not start)")
    continue
  fi
  args=(--port "$port" --server-pid "$server_pid" --subscribers "$subs" --mode "$mode"
        --messages "$messages" --duration-ms 20000 --label "$name")
  [ "$mode" = rate ] && args+=(--rate "$rate" --burst "$burst")
  [ "${procs:-1}" -gt 1 ] && args+=(--procs "$procs")
  out="$tmp/$name/bench.out"
  stat_pid=""
  if [ "$syscalls" = 1 ]; then
    perf stat -x, -o "$tmp/$name/syscalls.csv" -p "$server_pid" \
      -e syscalls:sys_enter_sendto,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_epoll_wait \
      >/dev/null 2>&1 &
    stat_pid=$!
  fi
  # bench_fanout bounds itself; the outer timeout only guards against a bug.
  timeout 180 "${bench_pin[@]}" "$bench" "${args[@]}" >"$out" 2>"$tmp/$name/bench.err"
  rc=$?
  if [ -n "$stat_pid" ]; then
    kill -INT "$stat_pid" 2>/dev/null
    wait "$stat_pid" 2>/dev/null
    # Whole run, connect phase included (a few calls per subscriber).
    d=$(sed -n 's/^deliveries=//p' "$out")
    awk -F, -v d="${d:-0}" '$3 ~ /sys_enter_/ { n = $3; sub(/.*sys_enter_/, "", n);
        printf "broker_%s_calls=%s\n", n, $1;
        if (d > 0) printf "broker_%s_per_delivery=%.3f\n", n, $1 / d;
        if (n == "sendto" && $1 > 0) printf "deliveries_per_sendto=%.2f\n", d / $1 }' \
      "$tmp/$name/syscalls.csv" >>"$out"
  fi
  grep -v '^workload=' "$out"
  [ -s "$tmp/$name/bench.err" ] && sed 's/^/# /' "$tmp/$name/bench.err" | head -20
  if ! kill -0 "$server_pid" 2>/dev/null; then
    echo "# the server died during the run; its log ends:"
    tail -5 "$tmp/$name/server.log" | sed 's/^/# /'
    rc=1
  fi
  stop_server
  [ "$perf" = 1 ] && echo "perf_data=$tmp/$name/perf.data"
  [ $rc -ne 0 ] && status=1
  get() { sed -n "s/^$1=//p" "$out" | head -1; }
  summary+=("$name|$subs|$mode|$(get result)|$(get deliveries_per_s)|$(get lost)|$(get duplicated)|$(get latency_us_p50)|$(get latency_us_p99)|$(get broker_cpu_us_per_delivery)|$(get broker_rss_bytes_per_conn)|$(get harness_cpu_us_per_delivery)|$(get publish_rate_per_s)|${floor1[$subs]:--}|${floor8[$subs]:--}|$(get broker_runq_wait_ms)")
  echo
done

echo "summary (load: $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores)"
{
  echo "workload|subs|mode|result|deliv/s|lost|dup|p50_us|p99_us|broker_us/deliv|rss_B/conn|harness_us/deliv|pub/s|floor1_us|floor8_us|broker_runq_ms"
  for line in "${summary[@]}"; do echo "$line"; done
} | column -t -s '|'

# The issue's targets, judged from the workloads that ran (docs/bench-fanout.md).
val() { [ -f "$tmp/$1/bench.out" ] && sed -n "s/^$2=//p" "$tmp/$1/bench.out" | head -1; }
verdict() { # verdict NAME VALUE OP LIMIT: prints target_NAME=MET|MISSED|NOT_RUN
  if [ -z "$2" ]; then echo "target_$1=NOT_RUN"; return; fi
  if awk -v v="$2" -v l="$4" -v op="$3" 'BEGIN { exit !(op == "<=" ? v <= l : v < l) }'; then
    echo "target_$1=MET value=$2 limit=$3$4"
  else
    echo "target_$1=MISSED value=$2 limit=$3$4"
  fi
}
if [ "$smoke" = 0 ]; then
  echo
  echo "targets (2-core machine; see docs/bench-fanout.md for how far load moves them)"
  verdict inflight1_us_per_delivery "$(val n1000-inflight1 broker_cpu_us_per_delivery)" "<=" 6
  if [ -n "$(val n1000-inflight1 broker_cpu_us_per_delivery)" ] && [ -n "${floor1[1000]:-}" ]; then
    verdict inflight1_within_10pct_of_floor_now "$(val n1000-inflight1 broker_cpu_us_per_delivery)" "<=" \
      "$(awk -v f="${floor1[1000]}" 'BEGIN { printf "%.3f", f * 1.1 }')"
  fi
  for w in n1000-rate1000 n1000-rate1000x8; do
    verdict "many_in_flight_us_per_delivery_$w" "$(val $w broker_cpu_us_per_delivery)" "<" 1
  done
  rss_max=$(for w in "${workloads[@]}"; do read -r nm _ <<<"$w"; val "$nm" broker_rss_bytes_per_conn; done |
            sort -n | tail -1)
  verdict rss_bytes_per_idle_conn "$rss_max" "<=" 4096
  rate=$(val n1000-rate1000 publish_rate_per_s)
  if [ -n "$rate" ] && awk -v r="$rate" 'BEGIN { exit !(r < 950) }'; then
    echo "target_p99_us_1000x1000=MISSED value=$(val n1000-rate1000 latency_us_p99) limit=<5000 (rate not carried: $rate msgs/s)"
  else
    verdict p99_us_1000x1000 "$(val n1000-rate1000 latency_us_p99)" "<" 5000
  fi
  echo "target_zero_loss=$([ $status = 0 ] && echo MET || echo MISSED)"
fi
[ "$perf" = 1 ] && [ "$keep" = 0 ] && echo "run_fanout: --perf without --keep: perf data removed; add --keep" >&2
exit $status
