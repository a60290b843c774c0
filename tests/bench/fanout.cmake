# Fan-out benchmark (docs/bench-fanout.md): an executable, never a timed test.
# tests/bench/run_fanout.sh runs it against `tern dev`.
add_executable(bench_fanout
  ${CMAKE_CURRENT_LIST_DIR}/bench_fanout.c
  ${CMAKE_CURRENT_LIST_DIR}/fanout/harness.c
  ${CMAKE_CURRENT_LIST_DIR}/fanout/broker_tern.c
  ${CMAKE_CURRENT_LIST_DIR}/fanout/broker_mosquitto.c
  ${CMAKE_CURRENT_LIST_DIR}/fanout/broker_nchan.c
  ${CMAKE_CURRENT_LIST_DIR}/fanout/http_pub.c
  ${CMAKE_CURRENT_LIST_DIR}/fanout/floor.c
  ${CMAKE_CURRENT_LIST_DIR}/fanout/measure.c
  ${CMAKE_CURRENT_LIST_DIR}/fanout/procs.c)
target_include_directories(bench_fanout PRIVATE ${CMAKE_CURRENT_LIST_DIR})
# wslay parses live subscribers' frames (fanout/harness.c says why); Debian ships
# its CMake package with libwslay-dev.
find_package(wslay REQUIRED CONFIG)
target_link_libraries(bench_fanout PRIVATE PkgConfig::LWS PkgConfig::UV wslay)

# Smoke run that proves the harness, not the broker's speed: 20 subscribers, a
# few messages in each mode, zero loss asserted. `$<TARGET_EXISTS>` keeps
# configuring working before the `tern` target exists; the script then looks
# in the build dir, and without a binary the test is skipped (exit 77).
add_test(NAME bench_fanout_smoke
  COMMAND ${CMAKE_CURRENT_LIST_DIR}/run_fanout.sh --smoke --only "^smoke-(inflight1|rate)$"
          --build ${CMAKE_BINARY_DIR}
          --tern "$<$<TARGET_EXISTS:tern>:$<TARGET_FILE:tern>>"
          --bench $<TARGET_FILE:bench_fanout>)
set_tests_properties(bench_fanout_smoke PROPERTIES
  LABELS "bench;bench-smoke" TIMEOUT 120 SKIP_RETURN_CODE 77)
# The same over two harness processes (--procs 2): the shared counters, the
# children's reports and their merge.
add_test(NAME bench_fanout_smoke_procs
  COMMAND ${CMAKE_CURRENT_LIST_DIR}/run_fanout.sh --smoke --only "^smoke-procs2$"
          --build ${CMAKE_BINARY_DIR}
          --tern "$<$<TARGET_EXISTS:tern>:$<TARGET_FILE:tern>>"
          --bench $<TARGET_FILE:bench_fanout>)
set_tests_properties(bench_fanout_smoke_procs PROPERTIES
  LABELS "bench;bench-smoke" TIMEOUT 120 SKIP_RETURN_CODE 77)
