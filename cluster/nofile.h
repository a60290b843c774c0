/* The process's open-file limit: every client connection of an edge is one
 * descriptor, so `tern edge` and `tern dev` raise it before they listen. */
#ifndef TERN_NOFILE_H
#define TERN_NOFILE_H

#include <stdint.h>
#include <stdio.h>

/* Raises the soft RLIMIT_NOFILE to the hard limit (at most TERN_NOFILE_MAX),
 * and writes one line to log with the limit in force: with a warning when it
 * is below `want` descriptors. Call it before lws_create_context, which sizes
 * its descriptor tables from the soft limit. Returns the soft limit now in
 * force (0 when it cannot be read). Nothing to free. */
uint64_t nofile_raise(uint64_t want, FILE *log);

#endif
