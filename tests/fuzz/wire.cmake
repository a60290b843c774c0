# libFuzzer targets for the edge's client-facing parsers: tern.v1.json frames
# and REST message bodies (wire.c), channel names (names.c) and the config file
# (config.c). Seed corpus in wire/corpus; each runs 15 s under ctest (label fuzz).
if(TARGET tern_wire)
  add_executable(fuzz_wire ${CMAKE_CURRENT_LIST_DIR}/wire/fuzz_wire.c)
  target_compile_options(fuzz_wire PRIVATE -fsanitize=fuzzer)
  target_link_options(fuzz_wire PRIVATE -fsanitize=fuzzer)
  target_link_libraries(fuzz_wire PRIVATE tern_wire tern_broker)
  set(TERN_WIRE_FUZZ_WORK ${CMAKE_CURRENT_BINARY_DIR}/wire-corpus)
  file(MAKE_DIRECTORY ${TERN_WIRE_FUZZ_WORK})
  add_test(NAME fuzz_wire
           COMMAND fuzz_wire -max_total_time=15 -timeout=10 -rss_limit_mb=2048
                   -max_len=8192 ${TERN_WIRE_FUZZ_WORK} ${CMAKE_CURRENT_LIST_DIR}/wire/corpus)
  set_tests_properties(fuzz_wire PROPERTIES LABELS "fuzz" TIMEOUT 120)
endif()
