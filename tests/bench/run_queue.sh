#!/usr/bin/env bash
# Durable-queue benchmark runner (docs/bench-queue.md). Builds nothing.
#
# One command, one run, both brokers: starts `tern dev` on a free 127.0.0.1
# port with a temporary data dir, runs bench_queue against it, stops it by
# PID; then starts RabbitMQ (Debian's rabbitmq-server) the same way: its own
# epmd on a free loopback port, AMQP and distribution on loopback only,
# mnesia, logs, config and Erlang cookie in a temporary dir, a unique node
# name; runs the same workload; stops it by PID. Prints both results and the
# ratio of the rates.
#
#   tests/bench/run_queue.sh [--build DIR] [--tern BIN] [--bench BIN]
#                            [--messages N] [--producers P] [--consumers C]
#                            [--window W] [--prefetch F] [--backlog N]
#                            [--bytes B] [--set 'KEY VAL'] [--tern-only]
#                            [--rabbit-only] [--rounds N] [--nice N]
#                            [--batch-writes] [--smoke] [--keep]
#
#   --build DIR     where `tern` and tests/bench/bench_queue are (./build)
#   --set 'KEY VAL' a line of the tern server's config (repeatable), e.g.
#                   --set 'store_sync normal'
#   --rounds N      run the pair N times, alternating (tern, rabbitmq, tern, ...),
#                   each on a fresh broker; the summary gives every run and
#                   the median rates (the machine is shared: load varies)
#   --nice N        run brokers and harness under `nice -n N` (root may use
#                   a negative N to stand up to other load on the machine)
#   --batch-writes  the Tern client frames its enqueues and acks itself and
#                   writes many per syscall (default: one write per frame, as
#                   librabbitmq does one send per method)
#   --rabbit-erl-args 'ARGS'  more Erlang VM flags for RabbitMQ, e.g. '+sbwt none
#                   +sbwtdcpu none +sbwtdio none' (no scheduler busy-waiting)
#   --smoke         5000 messages, Tern only unless --rabbit-only: proves the harness
#   --keep          keep the temporary dirs and logs
#
# Exit status: 0 when every run passed (no loss, no duplicate, no refusal),
# 1 when one failed, 2 on bad usage or a broker that would not start, 77 when
# the tern binary is missing (ctest: skipped).
set -uo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
build="$repo/build"
tern="" bench="" smoke=0 keep=0 do_tern=1 do_rabbit=1 rounds=1 nice_n="" tern_extra=() rabbit_erl_args=""
messages=200000 producers=2 consumers=2 window=64 prefetch=64 backlog=20000 bytes=64
extra_conf=()
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --tern) tern=$2; shift 2 ;;
    --bench) bench=$2; shift 2 ;;
    --messages) messages=$2; shift 2 ;;
    --producers) producers=$2; shift 2 ;;
    --consumers) consumers=$2; shift 2 ;;
    --window) window=$2; shift 2 ;;
    --prefetch) prefetch=$2; shift 2 ;;
    --backlog) backlog=$2; shift 2 ;;
    --bytes) bytes=$2; shift 2 ;;
    --set) extra_conf+=("$2"); shift 2 ;;
    --tern-only) do_rabbit=0; shift ;;
    --rabbit-only) do_tern=0; shift ;;
    --smoke) smoke=1; shift ;;
    --rounds) rounds=$2; shift 2 ;;
    --nice) nice_n=$2; shift 2 ;;
    --batch-writes) tern_extra+=(--batch-writes); shift ;;
    --rabbit-erl-args) rabbit_erl_args=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,38p' "$0"; exit 0 ;;
    *) echo "run_queue: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ "$smoke" = 1 ]; then
  messages=5000
  [ "$do_tern" = 1 ] && do_rabbit=0
fi
if [ -z "$tern" ]; then
  tern=$build/tern
  [ -x "$tern" ] || tern=$build/cluster/tern
fi
bench=${bench:-$build/tests/bench/bench_queue}
if [ "$do_tern" = 1 ] && [ ! -x "$tern" ]; then
  echo "run_queue: no server binary at $tern (build the tern target first)" >&2
  exit 77
fi
if [ ! -x "$bench" ]; then
  echo "run_queue: no bench_queue at $bench (build the bench_queue target; it needs librabbitmq-dev)" >&2
  exit 2
fi
rabbit_server=/usr/lib/rabbitmq/bin/rabbitmq-server
if [ "$do_rabbit" = 1 ] && { [ ! -x "$rabbit_server" ] || ! command -v epmd >/dev/null; }; then
  echo "run_queue: RabbitMQ is not installed (apt-get install rabbitmq-server)" >&2
  exit 2
fi

tmp=$(mktemp -d /tmp/tern-bench-queue.XXXXXX)
tern_pid="" rabbit_pid="" beam_pid="" epmd_pid=""

# free_port, stop_pid: tests/bench/lib_server.sh. RabbitMQ may take a while to
# stop, so every stop here waits up to 60 s before SIGKILL.
. "$repo/tests/bench/lib_server.sh"

cleanup() {
  stop_pid "$tern_pid" "tern" 60
  tern_pid=""
  stop_pid "$rabbit_pid" "rabbitmq-server" 60
  rabbit_pid=""
  if [ -n "$beam_pid" ] && kill -0 "$beam_pid" 2>/dev/null; then
    kill -KILL "$beam_pid" 2>/dev/null
  fi
  beam_pid=""
  stop_pid "$epmd_pid" "epmd" 60
  epmd_pid=""
  if [ "$keep" = 1 ]; then
    echo "run_queue: kept $tmp"
  else
    rm -rf "$tmp"
  fi
}
trap cleanup EXIT
trap 'exit 2' INT TERM


workload=(--messages "$messages" --producers "$producers" --consumers "$consumers"
          --window "$window" --prefetch "$prefetch" --backlog "$backlog" --bytes "$bytes")
nice_cmd=()
[ -n "$nice_n" ] && nice_cmd=(nice -n "$nice_n")
status=0
results=()   # "broker<TAB>output" per run

get() { sed -n "s/^$1=//p" <<<"$2" | head -1; }

# ------------------------------------------------------------------ Tern
run_tern() {
  local port conf up i q out rc info
  port=$(free_port)
  conf=$tmp/tern.conf
  rm -rf "$tmp/tern-data"
  : >"$conf"
  for line in "${extra_conf[@]}"; do echo "$line" >>"$conf"; done
  "${nice_cmd[@]}" "$tern" dev --listen "127.0.0.1:$port" --data "$tmp/tern-data" --config "$conf" \
    >"$tmp/tern.out" 2>"$tmp/tern.err" </dev/null &
  tern_pid=$!
  up=0
  for i in $(seq 1 300); do
    if curl -sf -o /dev/null --max-time 2 "http://127.0.0.1:$port/healthz"; then up=1; break; fi
    kill -0 "$tern_pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ "$up" != 1 ]; then
    echo "run_queue: tern dev did not start:" >&2
    tail -5 "$tmp/tern.err" >&2
    exit 2
  fi
  echo "== tern dev pid $tern_pid on 127.0.0.1:$port (config: ${extra_conf[*]:-defaults}; load $(cut -d' ' -f1-3 /proc/loadavg))"
  q="bench-$(date +%s)-$$"
  out=$("${nice_cmd[@]}" "$bench" --broker tern --port "$port" --pid "$tern_pid" --queue "$q" "${workload[@]}" "${tern_extra[@]}")
  rc=$?
  echo "$out"
  [ "$rc" = 0 ] || status=1
  # The broker's own view: every message acked, no consumer left.
  info=""
  for i in $(seq 1 50); do
    info=$(curl -s --max-time 5 "http://127.0.0.1:$port/v1/queues/$q")
    grep -q '"ready": *0' <<<"$info" && grep -q '"unacked": *0' <<<"$info" && break
    sleep 0.1
  done
  echo "queue_info=$info"
  if ! { grep -q '"ready": *0' <<<"$info" && grep -q '"unacked": *0' <<<"$info"; }; then
    echo "run_queue: tern still holds messages after every ack" >&2
    status=1
    out=$(printf '%s\npass=0\n' "$(grep -v '^pass=' <<<"$out")")
  fi
  curl -s --max-time 5 "http://127.0.0.1:$port/metrics" | grep "^tern_queue_.*queue=\"$q\"" || true
  stop_pid "$tern_pid" "tern" 60
  tern_pid=""
  results+=("tern	$out")
}

# ------------------------------------------------------------------ RabbitMQ
run_rabbit() {
  local amqp_port dist_port epmd_port r up i c out rc
  amqp_port=$(free_port)
  dist_port=$(free_port)
  epmd_port=$(free_port)
  r=$tmp/rabbitmq
  rm -rf "$r"
  mkdir -p "$r/home" "$r/mnesia" "$r/log"
  cat >"$r/rabbitmq.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$amqp_port
loopback_users.guest = true
log.console = false
log.file.level = warning
CONF
  echo "[]." >"$r/enabled_plugins"
  : >"$r/rabbitmq-env.conf"
  # Our own epmd on loopback, so nothing is shared with (or left for) others.
  ERL_EPMD_ADDRESS=127.0.0.1 epmd -port "$epmd_port" -address 127.0.0.1 >"$r/epmd.log" 2>&1 </dev/null &
  epmd_pid=$!
  env HOME="$r/home" \
    ERL_EPMD_PORT="$epmd_port" ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_NODENAME="tern-bench-$$-$RANDOM@localhost" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_NODE_PORT="$amqp_port" \
    RABBITMQ_DIST_PORT="$dist_port" \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1} $rabbit_erl_args" \
    RABBITMQ_MNESIA_BASE="$r/mnesia" RABBITMQ_LOG_BASE="$r/log" \
    RABBITMQ_CONFIG_FILE="$r/rabbitmq.conf" RABBITMQ_ADVANCED_CONFIG_FILE="$r/advanced.config" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$r/enabled_plugins" RABBITMQ_CONF_ENV_FILE="$r/rabbitmq-env.conf" \
    RABBITMQ_PID_FILE="$r/rabbit.pid" \
    "${nice_cmd[@]}" "$rabbit_server" >"$r/server.out" 2>"$r/server.err" </dev/null &
  rabbit_pid=$!
  # The script runs the Erlang VM as its child (erl execs beam.smp): find it.
  up=0
  beam_pid=""
  for i in $(seq 1 900); do
    if [ -z "$beam_pid" ]; then
      for c in $(cat /proc/$rabbit_pid/task/*/children 2>/dev/null); do
        if grep -q beam "/proc/$c/comm" 2>/dev/null; then beam_pid=$c; fi
      done
    fi
    if [ -n "$beam_pid" ] && (exec 3<>"/dev/tcp/127.0.0.1/$amqp_port") 2>/dev/null; then up=1; break; fi
    kill -0 "$rabbit_pid" 2>/dev/null || break
    sleep 0.1
  done
  if [ "$up" != 1 ]; then
    echo "run_queue: rabbitmq-server did not start:" >&2
    tail -20 "$r/server.out" "$r/server.err" >&2
    exit 2
  fi
  echo "== rabbitmq-server $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null) pid $rabbit_pid (beam $beam_pid) on 127.0.0.1:$amqp_port (load $(cut -d' ' -f1-3 /proc/loadavg))"
  out=$("${nice_cmd[@]}" "$bench" --broker rabbitmq --port "$amqp_port" --pid "$beam_pid" --queue "bench-$$" "${workload[@]}")
  rc=$?
  echo "$out"
  [ "$rc" = 0 ] || status=1
  stop_pid "$rabbit_pid" "rabbitmq-server" 60
  rabbit_pid=""
  for i in $(seq 1 100); do kill -0 "$beam_pid" 2>/dev/null || break; sleep 0.1; done
  stop_pid "$epmd_pid" "epmd" 60
  epmd_pid=""
  results+=("rabbitmq	$out")
}

for round in $(seq 1 "$rounds"); do
  [ "$do_tern" = 1 ] && run_tern
  [ "$do_rabbit" = 1 ] && run_rabbit
done

# ------------------------------------------------------------------ summary
median() { sort -n | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
echo
echo "workload: ${workload[*]}"
printf '%-9s %5s %10s %10s %10s %10s %14s %15s %10s\n' broker pass msgs/s p50_us p99_us max_us broker_us/msg harness_us/msg cpu_cores
for res in "${results[@]}"; do
  b=${res%%	*} out=${res#*	}
  printf '%-9s %5s %10s %10s %10s %10s %14s %15s %10s\n' "$b" "$(get pass "$out")" "$(get rate "$out")" \
    "$(get latency_p50_us "$out")" "$(get latency_p99_us "$out")" "$(get latency_max_us "$out")" \
    "$(get broker_cpu_us_per_msg "$out")" "$(get harness_cpu_us_per_msg "$out")" "$(get broker_cpu_cores "$out")"
done
rates() { for res in "${results[@]}"; do [ "${res%%	*}" = "$1" ] && get rate "${res#*	}"; done; }
cpus() { for res in "${results[@]}"; do [ "${res%%	*}" = "$1" ] && get broker_cpu_us_per_msg "${res#*	}"; done; }
tr=$(rates tern | median) rr=$(rates rabbitmq | median)
[ -n "$tr" ] && echo "tern_rate_median=$tr"
[ -n "$rr" ] && echo "rabbitmq_rate_median=$rr"
if [ -n "$tr" ] && [ -n "$rr" ] && [ "$rr" != 0 ]; then
  echo "ratio_tern_over_rabbitmq=$(awk -v a="$tr" -v b="$rr" 'BEGIN { printf "%.2f", a / b }')"
  tc=$(cpus tern | median) rc=$(cpus rabbitmq | median)
  if [ -n "$tc" ] && [ -n "$rc" ]; then
    echo "cpu_per_msg_ratio_rabbitmq_over_tern=$(awk -v a="$rc" -v b="$tc" 'BEGIN { if (b > 0) printf "%.2f", a / b }')"
  fi
fi
exit $status
