/*
 * A fan-out run spread over several harness processes (bench_fanout --procs).
 *
 * One process may hold only RLIMIT_NOFILE connections; P processes hold P
 * times as many. Process 0 (the parent) runs the publisher and its share of
 * the subscribers, processes 1..P-1 (forked children) only theirs. What the
 * parent's phases depend on lives in one MAP_SHARED region mapped before the
 * fork, so every pointer in it is valid in every process:
 *
 *   - per message: subscribers that have it, and its seq from the publish OK;
 *   - per channel: subscribers live on it, and ever subscribed to it;
 *   - the global live count, connect window, and the go and stop flags;
 *   - per process: a slot with its live delivery figures and, at the end,
 *     its whole struct fanout_result.
 *
 * Counters are C11 atomics. The parent alone decides phases; children
 * follow the go and stop flags. A child dies with its parent
 * (PR_SET_PDEATHSIG), and the parent bounds every wait for a child.
 */
#ifndef TERN_BENCH_FANOUT_PROCS_H
#define TERN_BENCH_FANOUT_PROCS_H

#include "fanout.h"

#include <stdatomic.h>
#include <sys/types.h>

/* Harness processes in one run, at most (--procs): 64 x 18 900 connections
 * is past FANOUT_SUBSCRIBERS_MAX already. */
#define FANOUT_PROCS_MAX 64

/* One process's corner of the region. The live fields are written by that
 * process alone (no cache line shared with another writer); `res` is
 * written once, before `done` is set. */
struct fanout_proc_slot {
	_Alignas(64) _Atomic uint64_t deliveries; /* so far */
	_Atomic uint64_t last_delivery_ns;
	_Atomic uint64_t last_sub_ok_ns;
	_Atomic uint32_t done;      /* 1: run_rc and res are final */
	int run_rc;                 /* fanout_run's return */
	struct fanout_result res;
};

struct fanout_shared {
	uint32_t procs;
	uint64_t messages;
	uint32_t nchan;
	pid_t pids[FANOUT_PROCS_MAX];     /* written by the parent only */
	bool reaped[FANOUT_PROCS_MAX];    /* parent only: waitpid took it */
	int status[FANOUT_PROCS_MAX];     /* parent only: its wait status */
	_Atomic uint32_t go;              /* parent: children start connecting */
	_Atomic uint32_t stop;            /* parent: children finish and report */
	_Atomic uint32_t subs_live;       /* subscribers live, all processes */
	_Atomic uint32_t connect_failed;  /* connections that failed, all processes */
	_Atomic uint64_t first_connect_ns; /* earliest connect start, any process */
	_Atomic uint64_t sent_upto;       /* publishes below this may arrive */
	_Atomic uint32_t *delivered;      /* [messages] */
	_Atomic uint64_t *msg_seq;        /* [messages]: 0 until the publish OK */
	_Atomic uint32_t *chan_live;      /* [nchan] */
	_Atomic uint32_t *chan_ever;      /* [nchan]: subscribers ever subscribed */
	struct fanout_proc_slot slots[FANOUT_PROCS_MAX];
	size_t map_bytes;
};

/* Maps the region for `procs` (2..FANOUT_PROCS_MAX) processes, `messages`
 * messages and `nchan` channels, zeroed. Returns 0 and *out (the caller
 * owns it: fanout_shared_free), or -errno. */
int fanout_shared_create(uint32_t procs, uint64_t messages, uint32_t nchan,
			 struct fanout_shared **out);
/* Unmaps the region (in the parent, once the children are reaped). */
void fanout_shared_free(struct fanout_shared *sh);

/* Subscribers [*first, *first + *count) of `n` are process k's of `procs`:
 * contiguous slices, sizes differing by one at most. */
void fanout_procs_slice(uint32_t n, uint32_t procs, uint32_t k, uint32_t *first,
			uint32_t *count);

/* Forks procs - 1 children. Must be called before any loop or lws context
 * exists, with stdio flushed. Returns the caller's process index: 0 in the
 * parent, 1..procs-1 in a child (which dies with the parent); or -errno in
 * the parent when a fork failed, after killing the children already made. */
int fanout_procs_fork(struct fanout_shared *sh);

/* Child: stores `run_rc` and `res` in its slot and exits 0. Never returns. */
void fanout_procs_child_exit(struct fanout_shared *sh, uint32_t k, int run_rc,
			     const struct fanout_result *res);

/* Parent, during the run: 0 while no child has ended before the stop flag;
 * else -1 with `why` naming the first that did (it is reaped). */
int fanout_procs_check(struct fanout_shared *sh, char *why, size_t cap);

/* Parent, at the end: sets the stop flag, waits up to `timeout_ms` for every
 * child, SIGKILLs those still running, and adds the figures of those that
 * reported into `res` (sums; histograms bucket-wise). Returns 0, or -1 with
 * `why` naming the first child that died, failed to run or did not report. */
int fanout_procs_collect(struct fanout_shared *sh, uint32_t timeout_ms,
			 struct fanout_result *res, char *why, size_t cap);

/* Parent, when the run could not start: SIGKILLs and reaps every child. */
void fanout_procs_kill(struct fanout_shared *sh);

#endif
