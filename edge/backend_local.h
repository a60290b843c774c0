/* The in-process backend: the edge's operations served by a broker in the
 * same process, on the same loop. Completions that the broker gives
 * synchronously are deferred to the next loop turn, as a link would. */
#ifndef TERN_BACKEND_LOCAL_H
#define TERN_BACKEND_LOCAL_H

#include <uv.h>

#include "backend.h"

struct backend_local;

extern const struct backend_ops backend_local_ops;

/* Wraps b. Returns NULL when out of memory. */
struct backend_local *backend_local_new(uv_loop_t *loop, struct broker *b);
/* Stops its handle; frees itself once the handle is closed. Every upstream
 * subscription must be gone. */
void backend_local_close(struct backend_local *bl);

#endif
