# Integration tests: each script starts real `tern dev` processes on free
# loopback ports and drives them with real clients. Run with
#   ctest -L integration --output-on-failure
# The scripts need /usr/bin/python3 with Debian's python3-websockets, curl,
# and for the `browser` label Debian's chromium.
#
# Registration is deferred to the end of the top-level CMakeLists.txt so that it
# works wherever the `tern` target is defined, and is skipped while it does not
# exist (the configure step must pass either way).
set_property(GLOBAL PROPERTY TERN_IT_DIR ${CMAKE_CURRENT_LIST_DIR})

function(tern_it_add name script timeout_s)
  get_property(dir GLOBAL PROPERTY TERN_IT_DIR)
  add_test(NAME it_${name}
           COMMAND /usr/bin/python3 ${dir}/${script} $<TARGET_FILE:tern>)
  set_tests_properties(it_${name} PROPERTIES
                       LABELS "integration;${ARGN}"
                       TIMEOUT ${timeout_s}
                       ENVIRONMENT "PYTHONDONTWRITEBYTECODE=1")
endfunction()

# Split mode: the same script with TERN_IT_MODE=split, so ternlib.Server runs a
# `tern node` and a `tern edge --nodes` instead of `tern dev` (issue 5).
function(tern_it_add_split name script timeout_s)
  get_property(dir GLOBAL PROPERTY TERN_IT_DIR)
  add_test(NAME it_split_${name}
           COMMAND /usr/bin/python3 ${dir}/${script} $<TARGET_FILE:tern>)
  set_tests_properties(it_split_${name} PROPERTIES
                       LABELS "integration;split;${ARGN}"
                       TIMEOUT ${timeout_s}
                       ENVIRONMENT "PYTHONDONTWRITEBYTECODE=1;TERN_IT_MODE=split")
endfunction()

function(tern_it_register)
  if(NOT TARGET tern)
    message(STATUS "integration tests: no `tern` target yet, not registered")
    return()
  endif()
  tern_it_add(cli             test_cli.py             300)
  tern_it_add(ws_channels     test_ws_channels.py     300)
  tern_it_add(ws_errors       test_ws_errors.py       300)
  tern_it_add(rest            test_rest.py            300)
  tern_it_add(ordering        test_ordering.py        400)
  tern_it_add(history         test_history.py         400)
  tern_it_add(durability      test_durability.py      400)
  tern_it_add(slow_consumer   test_slow_consumer.py   400)
  tern_it_add(large_messages  test_large_messages.py  400)
  tern_it_add(heartbeat       test_heartbeat.py       200)
  tern_it_add(shutdown        test_shutdown.py        300)
  tern_it_add(flush_linger    test_flush_linger.py    300)
  tern_it_add(browser         test_browser.py         300 browser)
  # Durable queues (issue 4): also labelled `queue` (ctest -L queue).
  tern_it_add(queue_ws          test_queue_ws.py          300 queue)
  tern_it_add(queue_redelivery  test_queue_redelivery.py  400 queue)
  tern_it_add(queue_rest        test_queue_rest.py        400 queue)
  tern_it_add(queue_bindings    test_queue_bindings.py    300 queue)
  tern_it_add(queue_errors      test_queue_errors.py      300 queue)
  tern_it_add(queue_durability  test_queue_durability.py  500 queue)
  tern_it_add(queue_stress      test_queue_stress.py      500 queue)
  # Cluster (issue 5): real `tern node` + `tern edge` processes; label `cluster`.
  tern_it_add(cluster_basic     test_cluster_basic.py     300 cluster)
  tern_it_add(cluster_sockets   test_cluster_sockets.py   300 cluster)
  tern_it_add(cluster_failure   test_cluster_failure.py   300 cluster)
  tern_it_add(cluster_restart   test_cluster_restart.py   300 cluster)
  tern_it_add(cluster_drain     test_cluster_drain.py     300 cluster)
  tern_it_add(edge_workers      test_edge_workers.py      300 cluster)
  # The client-contract suites again, against a node + an edge (label `split`).
  # Not re-run: test_cli.py (it runs `tern dev` itself to check that command's
  # flags, errors and start line). Single dev-only checks inside a suite are
  # skipped in split mode by ternlib.SPLIT_SKIP, which prints the reason.
  tern_it_add_split(ws_channels       test_ws_channels.py       300)
  tern_it_add_split(ws_errors         test_ws_errors.py         300)
  tern_it_add_split(rest              test_rest.py              300)
  tern_it_add_split(ordering          test_ordering.py          400)
  tern_it_add_split(history           test_history.py           400)
  tern_it_add_split(durability        test_durability.py        400)
  tern_it_add_split(slow_consumer     test_slow_consumer.py     400)
  tern_it_add_split(large_messages    test_large_messages.py    400)
  tern_it_add_split(heartbeat         test_heartbeat.py         200)
  tern_it_add_split(queue_ws          test_queue_ws.py          300 queue)
  tern_it_add_split(queue_redelivery  test_queue_redelivery.py  400 queue)
  tern_it_add_split(queue_rest        test_queue_rest.py        400 queue)
  tern_it_add_split(queue_bindings    test_queue_bindings.py    300 queue)
  tern_it_add_split(queue_errors      test_queue_errors.py      300 queue)
  tern_it_add_split(queue_durability  test_queue_durability.py  500 queue)
  tern_it_add_split(queue_stress      test_queue_stress.py      500 queue)
  tern_it_add_split(shutdown          test_shutdown.py          300)
  tern_it_add_split(flush_linger      test_flush_linger.py      300)
  tern_it_add_split(browser           test_browser.py           300 browser)
endfunction()

cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL tern_it_register)
