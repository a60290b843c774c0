# libFuzzer target for the port multiplexer's HTTP request head parser (cluster/portmux.c), with
# a seed corpus in portmux/corpus. The ctest run (label fuzz) fuzzes for 15 s; new inputs go to
# the build directory only.
if(TARGET tern_proto_fuzz)
  # portmux.c is compiled into the target so libFuzzer instruments the parser.
  add_executable(fuzz_portmux ${CMAKE_CURRENT_LIST_DIR}/portmux/fuzz_portmux.c
    ${PROJECT_SOURCE_DIR}/cluster/portmux.c)
  target_include_directories(fuzz_portmux PRIVATE ${PROJECT_SOURCE_DIR}/cluster)
  target_compile_options(fuzz_portmux PRIVATE -fsanitize=fuzzer)
  target_link_options(fuzz_portmux PRIVATE -fsanitize=fuzzer)
  target_link_libraries(fuzz_portmux PRIVATE tern_proto_fuzz PkgConfig::UV)
  set(TERN_PORTMUX_FUZZ_WORK ${CMAKE_CURRENT_BINARY_DIR}/portmux-corpus)
  file(MAKE_DIRECTORY ${TERN_PORTMUX_FUZZ_WORK})
  add_test(NAME fuzz_portmux
           COMMAND fuzz_portmux -max_total_time=15 -timeout=10 -rss_limit_mb=2048
                   -max_len=8192 ${TERN_PORTMUX_FUZZ_WORK} ${CMAKE_CURRENT_LIST_DIR}/portmux/corpus)
  set_tests_properties(fuzz_portmux PROPERTIES LABELS "fuzz" TIMEOUT 120)
endif()
