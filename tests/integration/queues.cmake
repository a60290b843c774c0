# Durable-queue integration tests (issue 4): real `tern dev` processes on
# loopback driven by WebSocket and REST clients, against the queue half of the
# client contract. Run with
#   ctest -R queue --output-on-failure      (or -L integration)
# Same rules as integration.cmake: /usr/bin/python3 with python3-websockets and
# curl; registration deferred to the end of the top-level CMakeLists.txt and
# skipped while the `tern` target does not exist.
set_property(GLOBAL PROPERTY TERN_QUEUE_IT_DIR ${CMAKE_CURRENT_LIST_DIR})

function(tern_queue_it_add name script timeout_s)
  get_property(dir GLOBAL PROPERTY TERN_QUEUE_IT_DIR)
  add_test(NAME it_${name}
           COMMAND /usr/bin/python3 ${dir}/${script} $<TARGET_FILE:tern>)
  set_tests_properties(it_${name} PROPERTIES
                       LABELS "integration;queue;${ARGN}"
                       TIMEOUT ${timeout_s}
                       ENVIRONMENT "PYTHONDONTWRITEBYTECODE=1")
endfunction()

function(tern_queue_it_register)
  if(NOT TARGET tern)
    message(STATUS "queue integration tests: no `tern` target yet, not registered")
    return()
  endif()
  tern_queue_it_add(queue_ws          test_queue_ws.py          300)
  tern_queue_it_add(queue_redelivery  test_queue_redelivery.py  400)
  tern_queue_it_add(queue_rest        test_queue_rest.py        400)
  tern_queue_it_add(queue_bindings    test_queue_bindings.py    300)
  tern_queue_it_add(queue_errors      test_queue_errors.py      300)
  tern_queue_it_add(queue_durability  test_queue_durability.py  500)
  tern_queue_it_add(queue_stress      test_queue_stress.py      500)
endfunction()

cmake_language(DEFER DIRECTORY ${CMAKE_SOURCE_DIR} CALL tern_queue_it_register)
