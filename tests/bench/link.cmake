# Link benchmark (issue 3): an executable printing key=value lines, never a timed test.
#   ./tests/bench/bench_link [--quick] [--tls]
add_executable(bench_link ${CMAKE_CURRENT_LIST_DIR}/bench_link.c)
target_link_libraries(bench_link PRIVATE tern_proto Threads::Threads)
