# Shared shell helpers for the benchmark runners (run_fanout.sh,
# run_cluster.sh, run_compare.sh, run_queue.sh): start a server process, wait for its /healthz, stop it by
# PID, read its CPU and sockets from /proc, measure the kernel's send() floor.
# Source it; it defines functions only. Every wait is bounded in count and time.

# free_port: prints a free TCP port on 127.0.0.1.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# wait_healthz PID PORT WHAT: 0 once http://127.0.0.1:PORT/healthz answers,
# 1 when PID exits first or nothing answers within 10 s (100 x 0.1 s). WHAT
# names the process in messages.
wait_healthz() {
  local pid=$1 port=$2 what=$3
  for _ in $(seq 100); do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "bench: $what exited at start" >&2
      return 1
    fi
    curl -sf -o /dev/null --max-time 1 "http://127.0.0.1:$port/healthz" && return 0
    sleep 0.1
  done
  echo "bench: $what did not answer /healthz within 10 s" >&2
  return 1
}

# stop_pid PID WHAT [SECONDS]: SIGTERM, SIGKILL after SECONDS (default 10),
# then reaps it (the caller must be its parent for the reap). Empty PID:
# nothing to do.
stop_pid() {
  local pid=$1 what=${2:-server} secs=${3:-10}
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null
  for _ in $(seq $((secs * 10))); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    echo "bench: $what $pid ignored SIGTERM for $secs s, killing it" >&2
    kill -KILL "$pid" 2>/dev/null
  fi
  wait "$pid" 2>/dev/null
  return 0
}

# proc_cpu_ticks PID: utime+stime of PID in clock ticks (/proc/PID/stat
# fields 14 and 15, read after the ')' that ends comm).
proc_cpu_ticks() {
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
  s=${s##*) }
  awk '{ print $12 + $13 }' <<<"$s"
}

# proc_sockets PID: how many of PID's descriptors are sockets.
proc_sockets() {
  find "/proc/$1/fd" -maxdepth 1 -lname 'socket:*' 2>/dev/null | wc -l
}

# proc_rss_kib PID: VmRSS in KiB.
proc_rss_kib() {
  sed -n 's/^VmRSS:[[:space:]]*\([0-9]*\).*/\1/p' "/proc/$1/status" 2>/dev/null
}

# bench_floor FILE N CMD...: the kernel's send() floor for N loopback
# connections, measured now: runs `CMD... --floor --subscribers N` (CMD is
# bench_fanout, maybe behind taskset), bounded by 120 s, output in FILE.
# Prints "FLOOR1 FLOOR8 FLOORI", the CPU µs per message with 1 and 8 messages
# per send() back to back, and with one message in flight; 1 when the
# measurement failed.
bench_floor() {
  local file=$1 n=$2 f1 f8 fin
  shift 2
  timeout 120 "$@" --floor --subscribers "$n" >"$file" || return 1
  f1=$(sed -n 's/^floor_us_per_msg_1=//p' "$file")
  f8=$(sed -n 's/^floor_us_per_msg_8=//p' "$file")
  fin=$(sed -n "s/^floor_us_per_msg_inflight1=//p" "$file")
  [ -n "$f1" ] && [ -n "$f8" ] && [ -n "$fin" ] || return 1
  echo "$f1 $f8 $fin"
}

# on_exit NAME STOP: at exit, runs the function STOP (which ends what the
# script started, by PID), then removes $tmp, or says it was kept when $keep
# is 1; INT and TERM exit 130 through the same path.
on_exit() {
  _on_exit_name=$1 _on_exit_stop=$2
  trap _on_exit_run EXIT
  trap 'exit 130' INT TERM
}
_on_exit_run() {
  "$_on_exit_stop"
  if [ "$keep" = 1 ]; then echo "$_on_exit_name: kept $tmp" >&2; else rm -rf "$tmp"; fi
}
