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

# The null broker (null_broker.c): one send() per delivery and nothing else,
# the floor run_compare.sh measures brokers against with one message in flight.
add_executable(bench_null ${CMAKE_CURRENT_LIST_DIR}/null_broker.c)
target_link_libraries(bench_null PRIVATE PkgConfig::LWS PkgConfig::UV)

# Smoke runs that prove the harness, not the broker's speed: 20 subscribers,
# a few messages, zero loss asserted; ONLY picks run_fanout.sh's smoke
# workloads. `$<TARGET_EXISTS>` keeps configuring working before the `tern`
# target exists; the script then looks in the build dir, and without a binary
# the test is skipped (exit 77).
function(bench_fanout_smoke name only)
  add_test(NAME ${name}
    COMMAND ${CMAKE_CURRENT_LIST_DIR}/run_fanout.sh --smoke --only "${only}"
            --build ${CMAKE_BINARY_DIR}
            --tern "$<$<TARGET_EXISTS:tern>:$<TARGET_FILE:tern>>"
            --bench $<TARGET_FILE:bench_fanout>)
  set_tests_properties(${name} PROPERTIES
    LABELS "bench;bench-smoke" TIMEOUT 120 SKIP_RETURN_CODE 77)
endfunction()
# Each mode in one process.
bench_fanout_smoke(bench_fanout_smoke "^smoke-(inflight1|rate)$")
# inflight1 over two harness processes (--procs 2): the shared counters, the
# children's reports and their merge.
bench_fanout_smoke(bench_fanout_smoke_procs "^smoke-procs2$")
