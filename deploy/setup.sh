#!/usr/bin/env bash
# Tern set-up on Debian 12: installs what is missing, builds, then runs one of:
#   dev            build and start `tern dev` on 127.0.0.1:8080 (data in ./tern-data)
#   test           build and run the whole test suite with ctest
#   test-sanitize  build with AddressSanitizer + UBSan (clang) and run the suite again
#   deps           only install the Debian packages
#   build          only build (./build/tern)
#   bench-deps     also install the peers the benchmarks compare against
#                  (RabbitMQ, Mosquitto, nginx+nchan, gnuplot for the plot)
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:-dev}
shift || true

PACKAGES=(build-essential cmake pkg-config git
          libuv1-dev libwebsockets-dev libwebsockets-evlib-uv libjansson-dev
          libprotobuf-c-dev protobuf-c-compiler libsqlite3-dev libssl-dev
          libcmocka-dev clang libclang-rt-14-dev librabbitmq-dev libwslay-dev
          python3 python3-websockets curl chromium openssl)
BENCH_PACKAGES=(rabbitmq-server mosquitto nginx-light libnginx-mod-nchan gnuplot-nox)

install_deps() {
  local missing=()
  for p in "${PACKAGES[@]}" "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "setup: installing ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

build() {  # build DIR [cmake args...]
  local dir=$1; shift
  cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
  cmake --build "$dir" -j"$(nproc)"
}

case "$what" in
  deps) install_deps ;;
  bench-deps) install_deps "${BENCH_PACKAGES[@]}" ;;
  build) install_deps; build build ;;
  dev) install_deps; build build; exec ./build/tern dev "$@" ;;
  test)
    install_deps; build build
    cd build && ctest --output-on-failure --timeout 600 "$@" ;;
  test-sanitize)
    install_deps
    CC=clang build build-sanitize -DTERN_SANITIZE=ON -DTERN_FUZZ=ON
    cd build-sanitize
    ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
      ctest --output-on-failure --timeout 900 -LE nosanitize "$@" ;;
  *) echo "usage: deploy/setup.sh dev|test|test-sanitize|deps|bench-deps|build" >&2; exit 2 ;;
esac
