# Durable-queue benchmark (docs/bench-queue.md): an executable, never a timed
# test. tests/bench/run_queue.sh runs it against `tern dev` and RabbitMQ.
# It needs librabbitmq (Debian librabbitmq-dev) for the RabbitMQ side; without
# it the target is left out and configuring still works.
pkg_check_modules(RABBITMQC IMPORTED_TARGET librabbitmq)
if(NOT RABBITMQC_FOUND)
  message(STATUS "bench_queue: librabbitmq not found (apt-get install librabbitmq-dev), not built")
  return()
endif()

add_executable(bench_queue
  ${CMAKE_CURRENT_LIST_DIR}/bench_queue.c
  ${CMAKE_CURRENT_LIST_DIR}/fanout/measure.c)
target_include_directories(bench_queue PRIVATE ${CMAKE_CURRENT_LIST_DIR})
target_link_libraries(bench_queue PRIVATE PkgConfig::LWS PkgConfig::RABBITMQC Threads::Threads)

# Smoke run of the Tern side only: proves the harness (a few thousand messages,
# zero loss asserted), not the broker's speed. Skipped (77) without a tern binary.
add_test(NAME bench_queue_smoke
  COMMAND ${CMAKE_CURRENT_LIST_DIR}/run_queue.sh --smoke --tern-only --build ${CMAKE_BINARY_DIR}
          --tern "$<$<TARGET_EXISTS:tern>:$<TARGET_FILE:tern>>"
          --bench $<TARGET_FILE:bench_queue>)
set_tests_properties(bench_queue_smoke PROPERTIES
  LABELS "bench;bench-smoke" TIMEOUT 180 SKIP_RETURN_CODE 77)
