/* The process's open-file limit: every client connection of an edge is one
 * descriptor, so `tern edge` and `tern dev` raise it before they listen. */
#ifndef TERN_NOFILE_H
#define TERN_NOFILE_H

#include <stdint.h>
#include <stdio.h>

struct nofile {
	uint64_t was;  /* soft limit found at start */
	uint64_t now;  /* soft limit in force after nofile_raise */
	uint64_t hard; /* hard limit */
	int err;       /* errno of a failed getrlimit or setrlimit, else 0 */
};

/* Raises the soft RLIMIT_NOFILE to the hard limit (at most TERN_NOFILE_MAX)
 * and fills *out. Writes nothing, so a start that fails later still says one
 * line. Call it before lws_create_context, which sizes its descriptor tables
 * from the soft limit. */
void nofile_raise(struct nofile *out);

/* Writes one line to log: the limit in force, and when it holds fewer than
 * `want` descriptors, how many clients fit (in `procs` processes, each with
 * this limit) and what to raise. */
void nofile_log(const struct nofile *n, uint64_t want, unsigned procs, FILE *log);

#endif
