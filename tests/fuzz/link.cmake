# libFuzzer target for the link's frame decoder (issue 3), with a seed corpus in link/corpus.
# The ctest run (label fuzz) fuzzes for 15 s; new inputs go to the build directory only.
if(TARGET tern_proto_fuzz)
  add_executable(fuzz_link_frames ${CMAKE_CURRENT_LIST_DIR}/link/fuzz_link_frames.c)
  target_compile_options(fuzz_link_frames PRIVATE -fsanitize=fuzzer)
  target_link_options(fuzz_link_frames PRIVATE -fsanitize=fuzzer)
  target_link_libraries(fuzz_link_frames PRIVATE tern_proto_fuzz)
  set(TERN_LINK_FUZZ_WORK ${CMAKE_CURRENT_BINARY_DIR}/link-corpus)
  file(MAKE_DIRECTORY ${TERN_LINK_FUZZ_WORK})
  add_test(NAME fuzz_link_frames
           COMMAND fuzz_link_frames -max_total_time=15 -timeout=10 -rss_limit_mb=2048
                   -max_len=4096 ${TERN_LINK_FUZZ_WORK} ${CMAKE_CURRENT_LIST_DIR}/link/corpus)
  set_tests_properties(fuzz_link_frames PROPERTIES LABELS "fuzz" TIMEOUT 120)
endif()
