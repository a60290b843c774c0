# libFuzzer targets for the edge's client-facing parsers: tern.v1.json frames
# and REST message bodies (wire.c), channel names (names.c) and the config file
# (config.c). Seed corpus in wire/corpus; each runs 15 s under ctest (label fuzz).
if(TARGET tern_wire)
  # The parsers are compiled into the target so libFuzzer instruments them.
  add_executable(fuzz_wire ${CMAKE_CURRENT_LIST_DIR}/wire/fuzz_wire.c
    ${PROJECT_SOURCE_DIR}/edge/wire.c ${PROJECT_SOURCE_DIR}/edge/frame.c
    ${PROJECT_SOURCE_DIR}/broker/names.c ${PROJECT_SOURCE_DIR}/broker/config.c
    ${PROJECT_SOURCE_DIR}/broker/msg.c ${PROJECT_SOURCE_DIR}/broker/tern_err.c)
  target_include_directories(fuzz_wire PRIVATE ${PROJECT_SOURCE_DIR}/edge ${PROJECT_SOURCE_DIR}/broker)
  target_compile_options(fuzz_wire PRIVATE -fsanitize=fuzzer)
  target_link_options(fuzz_wire PRIVATE -fsanitize=fuzzer)
  target_link_libraries(fuzz_wire PRIVATE PkgConfig::JANSSON PkgConfig::LWS OpenSSL::Crypto)
  set(TERN_WIRE_FUZZ_WORK ${CMAKE_CURRENT_BINARY_DIR}/wire-corpus)
  file(MAKE_DIRECTORY ${TERN_WIRE_FUZZ_WORK})
  add_test(NAME fuzz_wire
           COMMAND fuzz_wire -max_total_time=15 -timeout=10 -rss_limit_mb=2048
                   -max_len=8192 ${TERN_WIRE_FUZZ_WORK} ${CMAKE_CURRENT_LIST_DIR}/wire/corpus)
  set_tests_properties(fuzz_wire PROPERTIES LABELS "fuzz" TIMEOUT 120)
endif()
