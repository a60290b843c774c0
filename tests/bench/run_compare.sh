#!/usr/bin/env bash
# Fan-out comparison (issue 6): the same bench_fanout workloads against Tern
# as `tern dev` (tern) and as `tern node` + `tern edge` (tern-split),
# Mosquitto (MQTT 3.1.1 over WebSocket, QoS 0) and nginx+nchan (WebSocket
# subscribers, HTTP POST publisher), in one run, each broker started here on
# free 127.0.0.1 ports and stopped by its PIDs. Builds nothing. Measures the
# kernel's send() floor in the same run (bench_fanout --floor) for every
# subscriber count of a one-in-flight workload. Prints every bench_fanout
# figure, one table, the ratios Tern/peer and Tern's one-in-flight CPU over
# the floor; with --docs it also writes docs/bench-compare.md and
# docs/bench-compare.png (gnuplot).
#
#   tests/bench/run_compare.sh [--build DIR] [--tern BIN] [--bench BIN]
#                              [--brokers 'tern tern-split mosquitto nchan']
#                              [--only REGEX] [--full] [--smoke] [--docs]
#                              [--duration-ms T] [--set 'KEY VAL']... [--keep]
#
#   --brokers LIST  which brokers, in this order (all four)
#   --only REGEX    run only workloads whose name matches (grep -E)
#   --full          add 100 messages/s, 4 KiB messages, 10 000 subscribers,
#                   and 1 000 channels x 10 subscribers at 1 000/s and flooded
#   --smoke         20 subscribers, a few messages: proves the plumbing
#   --docs          write docs/bench-compare.md and docs/bench-compare.png
#   --duration-ms T publish phase per run, at most (20000)
#   --set 'KEY VAL' one more line of Tern's config, dev, node and edge
#                   (repeatable)
#   --keep          keep the temporary dir (configs, logs, raw outputs)
#
# Needs: mosquitto, nginx-light (or any nginx) with libnginx-mod-nchan,
# gnuplot-nox for --docs, curl, python3 (free ports).
# Exit status: 0 when every run of Tern (and of the null broker) passed, 1
# when one failed or a broker did not start, 2 on bad usage. A peer that ran
# but lost messages (Mosquitto at 4 KiB x 1 000/s) is a result, shown as FAIL
# in the table and named at the end, not a failure of the comparison.
set -uo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
build="$repo/build"
tern="" bench="" only="" smoke=0 keep=0 full=0 docs=0 duration_ms=20000
brokers="tern tern-split mosquitto nchan"
tern_sets=()
args_given="$*"
while [ $# -gt 0 ]; do
  case "$1" in
    --build) build=$2; shift 2 ;;
    --tern) tern=$2; shift 2 ;;
    --bench) bench=$2; shift 2 ;;
    --brokers) brokers=$2; shift 2 ;;
    --only) only=$2; shift 2 ;;
    --full) full=1; shift ;;
    --smoke) smoke=1; shift ;;
    --docs) docs=1; shift ;;
    --duration-ms) duration_ms=$2; shift 2 ;;
    --set) tern_sets+=("$2"); shift 2 ;;
    --keep) keep=1; shift ;;
    -h|--help) sed -n '2,34p' "$0"; exit 0 ;;
    *) echo "run_compare: unknown argument $1" >&2; exit 2 ;;
  esac
done
if [ -z "$tern" ]; then
  tern=$build/tern
  [ -x "$tern" ] || tern=$build/cluster/tern
fi
bench=${bench:-$build/tests/bench/bench_fanout}
# The null broker (tests/bench/null_broker.c): the floor of the one-in-flight
# workloads, beside bench_fanout.
null=$(dirname "$bench")/bench_null
[ -x "$null" ] || { echo "run_compare: no bench_null beside $bench" >&2; exit 2; }
nchan_module=/usr/lib/nginx/modules/ngx_nchan_module.so
[ -x "$bench" ] || { echo "run_compare: no bench_fanout at $bench" >&2; exit 2; }
for b in $brokers; do
  case "$b" in
    tern|tern-split) [ -x "$tern" ] || { echo "run_compare: no tern binary at $tern" >&2; exit 2; } ;;
    mosquitto) command -v mosquitto >/dev/null ||
                 { echo "run_compare: mosquitto is not installed (apt-get install mosquitto)" >&2; exit 2; } ;;
    nchan) command -v nginx >/dev/null && [ -f "$nchan_module" ] ||
             { echo "run_compare: needs nginx and $nchan_module (apt-get install nginx-light libnginx-mod-nchan)" >&2; exit 2; } ;;
    *) echo "run_compare: unknown broker $b" >&2; exit 2 ;;
  esac
done
[ "$docs" = 1 ] && ! command -v gnuplot >/dev/null &&
  { echo "run_compare: --docs needs gnuplot (apt-get install gnuplot-nox)" >&2; exit 2; }

# Every broker and the harness hold one descriptor per subscriber.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)

# name subscribers channels mode messages rate burst bytes [options]. With K
# channels, subscriber i listens on channel i % K and message i goes to
# channel i % K. Options (one word, commas for spaces) go to bench_fanout as
# they are.
if [ "$smoke" = 1 ]; then
  workloads=(
    "smoke-inflight1     20    1 inflight1  50    0    1 64"
    "smoke-rate          20    1 rate       200   400  4 64"
    "smoke-channels-4k   20    5 rate       200   400  4 4096"
  )
else
  workloads=(
    "n1000-inflight1     1000    1 inflight1  3000  0    1 64"
    "n1000-rate          1000    1 rate      20000  1000 1 64"
  )
  # n1000-rate100: a rate every broker carries, so p99 is compared at an
  # equal delivered rate; c1000x10-rate is the same for many channels.
  # c1000x10-flood asks for 10 000 publishes/s in bursts of 10, pipelined
  # over the 1 000 channels: more than any broker here carried beside the
  # harness on 2 cores (4 000 to 7 000/s, held by the backlog bound, with
  # zero loss everywhere, also in a trial at 20 000/s in bursts of 20 with
  # --window 5000), so the publisher always has messages in flight.
  [ "$full" = 1 ] && workloads+=(
    "n1000-rate100       1000    1 rate       2000  100  1 64"
    "n1000-inflight1-4k  1000    1 inflight1  3000  0    1 4096"
    "n1000-rate-4k       1000    1 rate      20000  1000 1 4096"
    "n10000-inflight1   10000    1 inflight1  400   0    1 64"
    "n10000-rate100     10000    1 rate       2000  100  1 64"
    "c1000x10-rate      10000 1000 rate      20000  1000 1 64"
    "c1000x10-flood     10000 1000 rate     400000 10000 10   64"
  )
fi

tmp=$(mktemp -d "${TMPDIR:-/tmp}/tern-bench-compare.XXXXXX")
server_pids=()   # the running broker's processes, in start order

# free_port, wait_healthz, stop_pid, bench_floor, on_exit: tests/bench/lib_server.sh
. "$repo/tests/bench/lib_server.sh"

# stop_server: stops the broker's processes by PID, last started first (the
# edge before its node).
stop_server() {
  local i
  for ((i = ${#server_pids[@]} - 1; i >= 0; i--)); do
    stop_pid "${server_pids[$i]}" server
  done
  server_pids=()
}
on_exit run_compare stop_server

# wait_port PID PORT LOG: 0 once something accepts on 127.0.0.1:PORT while
# PID lives, 1 when it exits or 10 s pass (the caller then stops the broker).
wait_port() {
  for _ in $(seq 100); do
    if ! kill -0 "$1" 2>/dev/null; then
      echo "run_compare: the server exited at start:" >&2
      tail -5 "$3" >&2
      return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "run_compare: nothing listens on $2 after 10 s" >&2
  return 1
}

# tern_conf DIR: DIR/tern.conf, the config of every Tern process of a run.
# store_sync normal: the peers keep nothing on disk (Mosquitto runs with
# persistence false, nchan in memory); Tern still writes every message to
# SQLite's WAL before it acknowledges or delivers it, only without an fsync per
# commit. --set 'store_sync full' (Tern's default) measures that too.
tern_conf_lines() {
  printf 'session_queue_max_bytes 8388608\nheartbeat_ms 15000\nstore_sync normal\n'
  [ ${#tern_sets[@]} -gt 0 ] && printf '%s\n' "${tern_sets[@]}"
  return 0
}
tern_conf() {
  tern_conf_lines >"$1/tern.conf"
}

start_tern() { # DIR
  local dir=$1
  mkdir -p "$dir/data"
  tern_conf "$dir"
  port=$(free_port)
  "$tern" dev --listen "127.0.0.1:$port" --data "$dir/data" --config "$dir/tern.conf" \
    >"$dir/server.log" 2>&1 &
  server_pids=($!)
  wait_port "$!" "$port" "$dir/server.log"
}

# tern node + tern edge, clients on the edge; ready once the edge's /healthz
# says 200, which it does only once the node answered and a data link is up.
start_tern_split() { # DIR
  local dir=$1 node_port
  mkdir -p "$dir/data"
  tern_conf "$dir"
  node_port=$(free_port)
  "$tern" node --id n1 --listen "127.0.0.1:$node_port" --data "$dir/data" \
    --config "$dir/tern.conf" >"$dir/node.log" 2>&1 &
  server_pids=($!)
  wait_healthz "$!" "$node_port" "tern node" || { tail -5 "$dir/node.log" >&2; return 1; }
  port=$(free_port)
  "$tern" edge --region local --listen "127.0.0.1:$port" --nodes "127.0.0.1:$node_port" \
    --config "$dir/tern.conf" >"$dir/edge.log" 2>&1 &
  server_pids+=($!)
  wait_healthz "$!" "$port" "tern edge" || { tail -5 "$dir/edge.log" >&2; return 1; }
}

# Mosquitto 2.0.x cannot start with only a WebSocket listener, and binds a
# WebSocket listener to an interface, not an address (eclipse-mosquitto
# issues 2284 and 3045): a plain MQTT listener on 127.0.0.1 that the
# benchmark never uses comes first, and the WebSocket one is bound to `lo`.
start_mosquitto() { # DIR
  local dir=$1 mqtt_port
  mkdir -p "$dir"
  port=$(free_port)
  mqtt_port=$(free_port)
  cat >"$dir/mosquitto.conf" <<EOF
per_listener_settings false
allow_anonymous true
persistence false
max_queued_messages 100000
max_inflight_messages 0
max_connections -1
set_tcp_nodelay true
log_dest stderr
log_type error
log_type warning
listener $mqtt_port 127.0.0.1
listener $port lo
protocol websockets
EOF
  mosquitto -c "$dir/mosquitto.conf" >"$dir/server.log" 2>&1 &
  server_pids=($!)
  wait_port "$!" "$port" "$dir/server.log"
}

# The null broker: one send() per delivery of the same pre-framed bytes and
# nothing else (no store, no queue); run after the brokers of every
# one-in-flight and many-channel workload.
start_null() { # DIR
  local dir=$1
  mkdir -p "$dir"
  port=$(free_port)
  "$null" --port "$port" >"$dir/server.log" 2>&1 &
  server_pids=($!)
  wait_port "$!" "$port" "$dir/server.log"
}

# One worker, so the whole broker is one process doing the work (the master
# is idle but counted: bench_fanout sums a PID and its children).
start_nchan() { # DIR
  local dir=$1 conns=$(( nofile > 1024 ? nofile - 64 : 1024 ))
  mkdir -p "$dir/logs"
  port=$(free_port)
  cat >"$dir/nginx.conf" <<EOF
load_module $nchan_module;
worker_processes 1;
error_log $dir/error.log warn;
events { worker_connections $conns; multi_accept on; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  proxy_temp_path $dir/proxy;
  fastcgi_temp_path $dir/fastcgi;
  uwsgi_temp_path $dir/uwsgi;
  scgi_temp_path $dir/scgi;
  # One keep-alive publisher connection carries every publish of a run.
  keepalive_requests 100000000;
  keepalive_timeout 600s;
  server {
    listen 127.0.0.1:$port;
    location ~ ^/sub/(.+)\$ { nchan_subscriber websocket; nchan_channel_id \$1; }
    location ~ ^/pub/(.+)\$ { nchan_publisher; nchan_channel_id \$1; }
  }
}
EOF
  nginx -p "$dir" -c "$dir/nginx.conf" -g "daemon off; pid $dir/nginx.pid;" \
    >"$dir/server.log" 2>&1 &
  server_pids=($!)
  wait_port "$!" "$port" "$dir/error.log"
}

# selected NAME: 0 when --only lets workload NAME run.
selected() { [ -z "$only" ] || grep -Eq "$only" <<<"$1"; }

# lines ARG...: each ARG on a line of its own (nothing for none).
lines() {
  local r
  for r in "$@"; do echo "$r"; done
}

status=0
peer_failed=()
rows=()
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
started_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)

# The kernel's send() floor, on this machine, under its load at the time, for
# the subscriber count and message size of each one-in-flight workload:
# measured just before its first broker and again just after its last, the
# two averaged (the machine is shared: a floor from minutes away is another
# machine). CPU µs per message with 1 and 8 messages per send() back to back,
# and with one message in flight (bench_fanout --floor). A message is the
# payload plus 6 bytes (70 for 64-byte payloads, the issue's figure): the
# WebSocket header and a little framing.
floor_bytes() { echo $(( $1 + 6 )); }
declare -A floor1 floor8 floori floor_seen
floor_rows=()
# measure_floor KEY TAG: one floor measurement for KEY (N:BYTES), its three
# figures appended to floor_seen[KEY].
measure_floor() {
  local n=${1%%:*} fb=${1#*:} f
  echo "workload=floor-$n-$fb-$2"
  if f=$(bench_floor "$tmp/floor-$n-$fb-$2.out" "$n" "$bench" --floor-bytes "$fb"); then
    grep -v '^bench=' "$tmp/floor-$n-$fb-$2.out"
    floor_seen[$1]+="$f "
  else
    echo "# the floor measurement failed"
  fi
  echo
}
# floor_done KEY: averages what measure_floor saw for KEY into floor1, floor8,
# floori and adds its row (with the in-flight figure's two readings).
floor_done() {
  local n=${1%%:*} fb=${1#*:} m
  m=$(awk -v s="${floor_seen[$1]:-}" 'BEGIN { k = split(s, v, " "); if (k < 3 || k % 3) exit
        for (i = 1; i <= k; i += 3) { a += v[i]; b += v[i + 1]; c += v[i + 2]; r = r (r == "" ? "" : "/") v[i + 2] }
        printf "%.3f %.3f %.3f %s", a * 3 / k, b * 3 / k, c * 3 / k, r }')
  if [ -z "$m" ]; then floor_rows+=("$n|$fb|-|-|-|-"); return; fi
  read -r floor1[$1] floor8[$1] floori[$1] _ <<<"$m"
  floor_rows+=("$n|$fb|${floor1[$1]}|${floor8[$1]}|${floori[$1]}|${m##* }")
}

for w in "${workloads[@]}"; do
  read -r name subs channels mode messages rate burst bytes opts <<<"$w"
  selected "$name" || continue
  fkey=$subs:$(floor_bytes "$bytes")
  [ "$mode" = inflight1 ] && measure_floor "$fkey" before
  # The null broker too where its figure is a floor: one message in flight,
  # and many channels (a publish reaches few subscribers).
  for b in $brokers $({ [ "$mode" = inflight1 ] || [ "$channels" -gt 1 ]; } && echo null); do
    dir="$tmp/$name-$b"
    echo "workload=$name"
    echo "broker=$b"
    if ! "start_${b//-/_}" "$dir"; then
      stop_server
      status=1
      rows+=("$name|$b|FAIL (server did not start)")
      echo
      continue
    fi
    # tern-split speaks Tern's protocol; its CPU and RSS are the node's and
    # the edge's summed.
    args=(--broker "$(case $b in tern*|null) echo tern ;; *) echo "$b" ;; esac)" --port "$port" --server-pid "$(IFS=,; echo "${server_pids[*]}")"
          --subscribers "$subs" --mode "$mode" --messages "$messages"
          --duration-ms "$duration_ms" --label "$name" --channel "bench-compare-$$"
          --channels "$channels" --bytes "$bytes")
    [ "$mode" = rate ] && args+=(--rate "$rate" --burst "$burst")
    [ -n "$opts" ] && args+=(${opts//,/ })
    out="$dir/bench.out"
    # bench_fanout bounds itself; the outer timeout only guards against a bug.
    timeout 180 "$bench" "${args[@]}" >"$out" 2>"$dir/bench.err"
    rc=$?
    grep -v '^workload=\|^broker=' "$out"
    [ -s "$dir/bench.err" ] && sed 's/^/# /' "$dir/bench.err" | head -10
    for pid in "${server_pids[@]}"; do
      if ! kill -0 "$pid" 2>/dev/null; then
        echo "# server process $pid died during the run"
        rc=1
      fi
    done
    stop_server
    if [ $rc -ne 0 ]; then
      case $b in
        mosquitto|nchan) peer_failed+=("$name/$b") ;;
        *) status=1 ;;
      esac
    fi
    get() { sed -n "s/^$1=//p" "$out" | head -1; }
    rows+=("$name|$b|$(get result)|$(get deliveries_per_s)|$(get lost)|$(get duplicated)|$(get reordered)|$(get latency_us_p50)|$(get latency_us_p99)|$(get latency_us_p999)|$(get broker_cpu_us_per_delivery)|$(get broker_oncpu_us_per_delivery)|$(get broker_rss_bytes_per_conn)|$(get publish_rate_per_s)|$(get broker_runq_wait_ms)|$(get harness_cpu_cores)")
    echo
  done
  if [ "$mode" = inflight1 ]; then
    measure_floor "$fkey" after
    floor_done "$fkey"
  fi
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)

header="workload|broker|result|deliv/s|lost|dup|reord|p50_us|p99_us|p999_us|cpu_us/deliv|oncpu_us/deliv|rss_B/conn|pub/s|runq_ms|harness_cores"
table() { echo "$header"; lines "${rows[@]}"; }
echo "summary (load at start: $load_start, at end: $load_end, on $(nproc) cores)"
table | column -t -s '|'

# Tern's brokers in this run, and the peers they are compared with.
terns="" peers=""
for b in $brokers; do
  case "$b" in tern*) terns+=" $b" ;; *) peers+=" $b" ;; esac
done

# ratio_rows: Tern/peer from this run, for each Tern broker and each peer
# (and tern-split/tern): CPU per delivery, RSS per connection, p99, deliv/s.
ratio_rows() {
  local n t p col line
  for w in "${workloads[@]}"; do
    read -r n _ <<<"$w"
    selected "$n" || continue
    for t in $terns; do
      for p in $peers $([ "$t" = tern-split ] && [[ " $terns " == *" tern "* ]] && echo tern) \
               $(table | awk -F'|' -v w="$n" '$1 == w && $2 == "null" { print "null" }'); do
        line="$n|$t/$p"
        for col in 11 13 9 4; do
          line+="|$(table | awk -F'|' -v w="$n" -v t="$t" -v p="$p" -v c="$col" '
            $1 == w && $2 == t { a = $c } $1 == w && $2 == p { q = $c }
            END { if (a != "" && q != "" && q + 0 > 0) printf "%.2f", a / q; else print "-" }')"
        done
        echo "$line"
      done
    done
  done
}
ratio_header="workload|ratio|cpu_us/deliv|rss_B/conn|p99_us|deliv/s"
echo
echo "ratios Tern/peer (cpu, rss, p99 below 1: Tern spends less; deliv/s above 1: Tern delivered faster)"
{ echo "$ratio_header"; ratio_rows; } | column -t -s '|'

# floor_ratio_rows: for every one-in-flight workload, each broker's CPU per
# delivery over the null broker's in the same workload (the floor the
# harness sees; the target for Tern: at most 1.10), and over the kernel's
# send() floor with one message in flight and back to back.
floor_ratio_rows() {
  local n s mode t c nul fin f1 by
  for w in "${workloads[@]}"; do
    read -r n s _ mode _ _ _ by _ <<<"$w"
    [ "$mode" = inflight1 ] && selected "$n" || continue
    fin=${floori[$s:$(floor_bytes "$by")]:-} f1=${floor1[$s:$(floor_bytes "$by")]:-}
    nul=$(table | awk -F'|' -v w="$n" '$1 == w && $2 == "null" && $3 == "PASS" { print $11 }')
    for t in $brokers; do
      c=$(table | awk -F'|' -v w="$n" -v t="$t" '$1 == w && $2 == t { print $11 }')
      awk -v n="$n" -v t="$t" -v c="$c" -v nul="$nul" -v fin="$fin" -v f1="$f1" '
        function r(x) { return (c != "" && x + 0 > 0) ? sprintf("%.2f", c / x) : "-" }
        BEGIN { printf "%s|%s|%s|%s|%s|%s|%s|%s|%s|%s\n", n, t, c, nul, r(nul), fin, r(fin), f1, r(f1),
          t !~ /^tern/ ? "-" : r(nul) == "-" ? "NOT_MEASURED" : c / nul <= 1.10 ? "MET" : "MISSED" }'
    done
  done
}
floor_header="subscribers|msg_bytes|floor_us_per_msg_1|floor_us_per_msg_8|floor_us_per_msg_inflight1|inflight1_before/after"
floor_ratio_header="workload|broker|cpu_us/deliv|null_us|ratio_null|floor_inflight1_us|ratio_inflight1|floor1_us|ratio_b2b|target<=1.10"
echo
echo "floor: the kernel's send() CPU per message and connection, this run"
{ echo "$floor_header"; lines "${floor_rows[@]}"; } | column -t -s '|'
echo
echo "one in flight: CPU per delivery over the null broker's and the kernel's floors (Tern's target: <= 1.10 over the null broker)"
{ echo "$floor_ratio_header"; floor_ratio_rows; } | column -t -s '|'

# md_table HEADER CMD...: a Markdown table of HEADER and the |-separated rows
# CMD prints.
md_table() {
  local h=$1
  shift
  echo "| $(sed 's/|/ | /g' <<<"$h") |"
  echo "|$(sed 's/[^|]*/---/g' <<<"$h")|"
  "$@" | sed 's/|/ | /g; s/^/| /; s/$/ |/'
}

if [ "$docs" = 1 ]; then
  md="$repo/docs/bench-compare.md" png="$repo/docs/bench-compare.png"
  dat="$tmp/plot.dat"
  # One row per workload, per broker: CPU µs/delivery, RSS KiB/conn, p99 ms,
  # messages published per s.
  {
    printf '# workload'
    for b in $brokers; do printf ' %s_cpu %s_rss %s_p99 %s_pubs' "$b" "$b" "$b" "$b"; done
    echo
    for w in "${workloads[@]}"; do
      read -r n _ <<<"$w"
      selected "$n" || continue
      printf '%s' "$n"
      for b in $brokers; do
        table | awk -F'|' -v w="$n" -v b="$b" '$1 == w && $2 == b {
          printf " %s %.3f %.3f %s", ($11 == "" ? "0" : $11), $13 / 1024, $9 / 1000,
                 ($14 == "" ? "0" : $14); f = 1 }
          END { if (!f) printf " 0 0 0 0" }'
      done
      echo
    done
  } >"$dat"
  nb=$(wc -w <<<"$brokers")
  {
    echo "set terminal pngcairo size 2000,560 font ',10'"
    echo "set output '$png'"
    echo "set style data histogram; set style histogram clustered gap 1"
    echo "set style fill solid 0.8 border -1; set boxwidth 0.9"
    echo "set key above horizontal; set grid ytics; set xtics rotate by -30 nomirror"
    echo "set bmargin 6"
    echo "set multiplot layout 1,4 title 'Fan-out: Tern vs peers ($(nproc) cores, load $load_start .. $load_end, $started_at)'"
    for m in "1:broker CPU µs per delivery" "2:broker RSS KiB per idle connection" \
             "3:p99 latency ms (log)" "4:messages published per s (log)"; do
      i=${m%%:*} t=${m#*:}
      echo "set title '$t'"
      if [ "$i" = 4 ]; then echo "set logscale y; set yrange [1:*]"
      elif [ "$i" = 3 ]; then echo "set logscale y; set yrange [*:*]"; else echo "unset logscale y; set yrange [0:*]"; fi
      printf "plot "
      for k in $(seq 0 $((nb - 1))); do
        b=$(awk -v k=$((k + 1)) '{ print $k }' <<<"$brokers")
        [ "$k" -gt 0 ] && printf ", "
        printf "'%s' using %d:xtic(1) title '%s'" "$dat" $((2 + k * 4 + i - 1)) "$b"
      done
      echo
    done
    echo "unset multiplot"
  } >"$tmp/plot.gp"
  gnuplot "$tmp/plot.gp" || echo "run_compare: gnuplot failed" >&2
  {
    echo "# Fan-out comparison: Tern (dev, and node + edge), Mosquitto, nginx+nchan"
    echo
    echo "Written by \`tests/bench/run_compare.sh ${args_given}\` (issue 6); the plot"
    echo "is [bench-compare.png](bench-compare.png). Every figure below comes from one"
    echo "run of that command; rerun it to regenerate both files."
    echo
    echo "- run: $started_at, checkout at $(git -C "$repo" rev-parse --short HEAD); binaries: $tern and $bench, built $(date -u -r "$tern" +%Y-%m-%dT%H:%M:%SZ) and $(date -u -r "$bench" +%Y-%m-%dT%H:%M:%SZ)"
    echo "- machine: $(nproc) cores ($(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)), load average $load_start at start, $load_end at end"
    echo "- brokers: tern dev (\`tern\`); tern node + tern edge (\`tern-split\`); $(mosquitto -h 2>/dev/null | head -1 || true); $(nginx -v 2>&1) with nchan $(dpkg-query -W -f '${Version}' libnginx-mod-nchan 2>/dev/null); and in the one-in-flight and many-channel workloads the null broker (\`null\`, tests/bench/null_broker.c: one send() per delivery and nothing else, no store), the floor the harness sees"
    echo "- harness: bench_fanout (docs/bench-fanout.md), one libuv loop, libwebsockets clients for the handshakes, wslay reading subscribed connections; 64-byte messages, 4 096 bytes in the \`-4k\` workloads"
    echo
    md_table "$header" lines "${rows[@]}"
    echo
    echo "Ratios Tern/peer from the same run (\`cpu_us/deliv\`, \`rss_B/conn\`,"
    echo "\`p99_us\` below 1: Tern spends less; \`deliv/s\` above 1: Tern delivered"
    echo "faster):"
    echo
    md_table "$ratio_header" ratio_rows
    echo
    echo "The kernel's send() floor, measured by \`bench_fanout --floor\` in the same"
    echo "run, just before and just after each one-in-flight workload's brokers (the"
    echo "two averaged; the in-flight figure's two readings in the last column): CPU µs"
    echo "per message and connection, back to back with 1 and 8 messages per send(),"
    echo "and with one message in flight (one message to every connection, then asleep"
    echo "until the receiver has them all, as a broker with one message in flight), for"
    echo "the subscriber count and message size (payload + 6 bytes) of the workload:"
    echo
    md_table "$floor_header" lines "${floor_rows[@]}"
    echo
    echo "One message in flight: each broker's CPU per delivery over the null broker's"
    echo "in the same workload (\`null\` above: one send() per delivery of bytes framed"
    echo "once, and nothing else, to the same harness; the floor the harness sees, and"
    echo "the issue's target for Tern: within 10 %, a ratio of at most 1.10), and over"
    echo "the kernel's send() floor with one message in flight and back to back:"
    echo
    md_table "$floor_ratio_header" floor_ratio_rows
    echo
    echo "Tern's config in this run (every Tern process): $(tern_conf_lines | paste -sd ';' | sed 's/;/; /g')."
    echo "Where the CPU goes (perf and callgrind): [fanout-profile.md](fanout-profile.md)."
    echo
    cat <<'EOF'
## How to read it

- Same harness, same workloads, brokers one after the other per workload on the
  same machine in the same run: one publisher and N WebSocket subscribers on one
  channel, every delivery checked (`lost`, `dup`, `reord` from the harness's
  message index in the payload; Tern's channel seq is checked too). Columns are
  bench_fanout's figures (docs/bench-fanout.md): `cpu_us/deliv` is the broker's
  utime+stime (`/proc/PID/stat`, 10 ms ticks) from the first publish to the end
  of the drain over deliveries, `oncpu_us/deliv` the same from schedstat (ns);
  `rss_B/conn` is the VmRSS growth over the subscribers' connect and an idle
  settle, per subscriber. Both are summed over every process of the broker:
  nginx's master and its worker, Tern's node and edge for `tern-split`
  (`bench_fanout --server-pid NODE,EDGE`).
- Tern: `tern dev` (`tern`), and `tern node` + `tern edge` (`tern-split`: one
  node, one edge in front of it on loopback, clients on the edge), both with
  `session_queue_max_bytes 8388608`, `heartbeat_ms 15000` and `store_sync
  normal` (above: the config as run); JSON over WebSocket; every publish is
  written to SQLite (WAL) before its `ok` and before any subscriber gets it;
  with `store_sync normal` there is no fsync per commit, which the peers, who
  keep nothing on disk, do not pay either.
  Mosquitto: MQTT 3.1.1 over WebSocket, QoS 0 both ways, no persistence,
  `max_queued_messages 100000`, `set_tcp_nodelay true`; a QoS 0 publish has no
  reply, so the publisher counts it acknowledged when written. Mosquitto 2.0.x
  needs a plain MQTT listener beside the WebSocket one (unused) and binds the
  WebSocket listener to the interface `lo`. nginx+nchan: one worker, WebSocket
  subscribers on `/sub/CHANNEL`, publishes as HTTP POST to `/pub/CHANNEL`,
  pipelined on one keep-alive connection, the 201 being the publish's `ok`.
- "64-byte messages" is the size as each broker counts it: Tern's JSON string
  value holds 62 payload bytes (its 2 quotes count), the peers carry 64.
- `n1000-inflight1`: the next message is published once every subscriber has the
  last one (round-trip bound; CPU per delivery is the headline). `n1000-rate`:
  1 000 messages/s for 20 s (p99 latency is the headline; a broker that cannot
  carry the rate shows a lower `pub/s`). `n1000-rate100` and `c1000x10-rate`
  ask for a rate every broker carries, so their p99 compares brokers at an
  equal delivered rate (`deliv/s` says whether it was equal). `c1000x10-flood`
  pipelines publishes at a high rate over 1 000 channels of 10 subscribers
  each: CPU per delivery with many messages in flight.
- The floor: `bench_fanout --floor` in the same run, just before and just
  after each one-in-flight workload, for its subscriber count and message size
  (payload + 6 bytes): the CPU one process spends in send() per message and
  connection on loopback, back to back (a tight loop, the receiver always
  busy) and with one message in flight (one message to every connection, then
  asleep until a receiver in another process has read them all, the pattern a
  broker with one message in flight follows).
- The harness is one process on one core. Where every broker shows about the
  same `deliv/s` and `harness_cores` is near 1, the harness set the pace: CPU
  per delivery is still the broker's own, but latency then includes the
  harness's queue. The rate workloads ask for 1 000 messages/s to 1 000
  subscribers (1 000 000 deliveries/s), which this 2-core machine cannot carry
  with the harness beside the broker: the publisher is held when 200 000
  deliveries are outstanding, `pub/s` shows the rate each broker actually
  carried, and p99 there is mostly time spent queued in a saturated system.
- `lost` counts deliveries that had not arrived when the drain ended (30 s after
  the last publish at most, or 5 s without progress): a message still queued
  in a slow broker counts as lost, exactly like a dropped one, and fails the run.
- The machine is shared and has 2 cores: the harness (one core at most) runs
  beside the broker, and the load average above says how much else ran. Ratios
  from one run are comparable with each other; absolute figures move with load
  (`runq_ms` is the time the broker waited for a CPU).
EOF
  } >"$md"
  echo "run_compare: wrote $md and $png"
fi
[ ${#peer_failed[@]} -gt 0 ] && echo "run_compare: peers that failed a workload (see the table): ${peer_failed[*]}"
exit $status
