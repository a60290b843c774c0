/* `tern edge --workers W`: one edge made of W worker processes that share the
 * client port (SO_REUSEPORT, the kernel spreads connections over them), each
 * with its own loop, sessions and links to the nodes. It is how one edge holds
 * more clients than one process's open-files limit allows, and uses more than
 * one core for fan-out. This process supervises them, as nginx's master does. */
#ifndef TERN_EDGE_WORKERS_H
#define TERN_EDGE_WORKERS_H

#include "config.h"

/* What one worker runs: the whole edge, on a loop of its own. `worker` is its
 * index (0..W-1). It starts with SIGTERM and SIGINT blocked and unblocks them
 * once its handlers are in; it writes one byte to ready_fd and closes it once
 * it listens, and returns the process's exit status. */
typedef int (*edge_worker_fn)(struct tern_config *cfg, int worker, int ready_fd);

/*
 * Forks cfg->workers workers and supervises them until SIGTERM or SIGINT:
 * - start: each worker must say it listens within TERN_EDGE_WORKER_READY_MS; if
 *   one fails to, the others are stopped and this returns 1;
 * - a worker that dies later is started again, after a pause that doubles
 *   while workers keep dying young (TERN_EDGE_WORKER_RESTART_MIN_MS..MAX_MS);
 * - SIGTERM or SIGINT is passed on once to every worker as SIGTERM (workers
 *   run in a process group of their own, so a terminal's Ctrl-C reaches them
 *   only this way); each drains as a single edge does; a worker still running
 *   TERN_EDGE_WORKER_STOP_MS later is killed. Returns 0 when every worker
 *   exited 0.
 * Workers get SIGTERM when this process dies (PR_SET_PDEATHSIG). Once every
 * worker listens, it calls started(arg, pids), pids their comma-separated
 * PIDs, for the start line.
 */
int edge_workers_run(struct tern_config *cfg, edge_worker_fn fn,
		     void (*started)(void *arg, const char *pids), void *arg);

#endif
