/*
 * Several harness processes for one run: the shared region, the fork, and
 * the parent's bounded wait and merge. See procs.h for each contract.
 */
#include "procs.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* How often the parent looks at its children while waiting for them. */
#define COLLECT_POLL_MS 10

static size_t round_up(size_t n, size_t to)
{
	return (n + to - 1) / to * to;
}

int fanout_shared_create(uint32_t procs, uint64_t messages, uint32_t nchan,
			 struct fanout_shared **out)
{
	size_t head = round_up(sizeof(struct fanout_shared), 64);
	size_t deliv = round_up(messages * sizeof(_Atomic uint32_t), 64);
	size_t seq = round_up(messages * sizeof(_Atomic uint64_t), 64);
	size_t chan = round_up((size_t)nchan * sizeof(_Atomic uint32_t), 64);
	size_t bytes = head + deliv + seq + 2 * chan;
	struct fanout_shared *sh;
	char *p;

	if (procs < 2 || procs > FANOUT_PROCS_MAX || nchan == 0)
		return -EINVAL;
	/* Anonymous pages are zero: every counter and flag starts at 0. */
	p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -errno;
	sh = (struct fanout_shared *)p;
	sh->procs = procs;
	sh->messages = messages;
	sh->nchan = nchan;
	sh->map_bytes = bytes;
	sh->delivered = (_Atomic uint32_t *)(p + head);
	sh->msg_seq = (_Atomic uint64_t *)(p + head + deliv);
	sh->chan_live = (_Atomic uint32_t *)(p + head + deliv + seq);
	sh->chan_ever = (_Atomic uint32_t *)(p + head + deliv + seq + chan);
	atomic_store(&sh->first_connect_ns, UINT64_MAX);
	*out = sh;
	return 0;
}

void fanout_shared_free(struct fanout_shared *sh)
{
	if (sh)
		munmap(sh, sh->map_bytes);
}

void fanout_procs_slice(uint32_t n, uint32_t procs, uint32_t k, uint32_t *first,
			uint32_t *count)
{
	uint64_t lo = (uint64_t)n * k / procs, hi = (uint64_t)n * (k + 1) / procs;

	*first = (uint32_t)lo;
	*count = (uint32_t)(hi - lo);
}

int fanout_procs_fork(struct fanout_shared *sh)
{
	pid_t parent = getpid();

	sh->pids[0] = parent;
	for (uint32_t k = 1; k < sh->procs; k++) {
		pid_t pid = fork();

		if (pid < 0) {
			int rc = -errno;

			sh->procs = k; /* the children made so far */
			fanout_procs_kill(sh);
			return rc;
		}
		if (pid == 0) {
			/* Dies with the parent; a parent that died before the
			 * prctl took effect is caught by getppid(). */
			if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
				_exit(1);
			return (int)k;
		}
		sh->pids[k] = pid;
	}
	return 0;
}

void fanout_procs_child_exit(struct fanout_shared *sh, uint32_t k, int run_rc,
			     const struct fanout_result *res)
{
	struct fanout_proc_slot *slot = &sh->slots[k];

	slot->run_rc = run_rc;
	memcpy(&slot->res, res, sizeof(*res));
	atomic_store_explicit(&slot->done, 1, memory_order_release);
	fflush(stderr);
	_exit(0);
}

/* "exited with 3", "killed by signal 9" into `buf`. */
static const char *describe(int status, char *buf, size_t cap)
{
	if (WIFSIGNALED(status))
		snprintf(buf, cap, "killed by signal %d", WTERMSIG(status));
	else
		snprintf(buf, cap, "exited with %d", WEXITSTATUS(status));
	return buf;
}

/* Reaps child k if it ended. Returns true when it has (now or before). */
static bool reap(struct fanout_shared *sh, uint32_t k)
{
	int status;

	if (sh->reaped[k])
		return true;
	if (waitpid(sh->pids[k], &status, WNOHANG) != sh->pids[k])
		return false;
	sh->reaped[k] = true;
	sh->status[k] = status;
	return true;
}

int fanout_procs_check(struct fanout_shared *sh, char *why, size_t cap)
{
	char how[48];

	for (uint32_t k = 1; k < sh->procs; k++)
		if (reap(sh, k)) {
			snprintf(why, cap, "harness process %u (pid %d) ended during the run: %s",
				 k, (int)sh->pids[k], describe(sh->status[k], how, sizeof(how)));
			return -1;
		}
	return 0;
}

static void hist_merge(struct fanout_hist *to, const struct fanout_hist *from)
{
	for (unsigned i = 0; i < FANOUT_HIST_BUCKETS; i++)
		to->buckets[i] += from->buckets[i];
	to->count += from->count;
	if (from->max_ns > to->max_ns)
		to->max_ns = from->max_ns;
	if (from->min_ns < to->min_ns)
		to->min_ns = from->min_ns;
}

/* Adds a child's subscriber figures to the parent's. The publisher's (published,
 * acked, ack latency) and the broker's are the parent's alone. */
static void merge(struct fanout_result *to, const struct fanout_result *from)
{
	to->connect_failed += from->connect_failed;
	to->closed_by_broker += from->closed_by_broker;
	to->slow_consumer += from->slow_consumer;
	to->deliveries += from->deliveries;
	to->duplicated += from->duplicated;
	to->reordered += from->reordered;
	to->seq_gaps += from->seq_gaps;
	to->seq_mismatch += from->seq_mismatch;
	to->errors += from->errors;
	to->bad_frames += from->bad_frames;
	to->harness_cpu.user_us += from->harness_cpu.user_us;
	to->harness_cpu.sys_us += from->harness_cpu.sys_us;
	to->harness_cpu.oncpu_ns += from->harness_cpu.oncpu_ns;
	to->harness_cpu.runq_wait_ns += from->harness_cpu.runq_wait_ns;
	hist_merge(&to->latency, &from->latency);
}

/* Waits until every child ended or `timeout_ms` passed; SIGKILLs and reaps
 * the rest, marking them in `overdue`. */
static void wait_all(struct fanout_shared *sh, uint32_t timeout_ms, bool *overdue)
{
	struct timespec pause = { .tv_nsec = COLLECT_POLL_MS * 1000000L };
	uint64_t deadline = fanout_now_ns() + (uint64_t)timeout_ms * 1000000ull;
	bool all;

	do {
		all = true;
		for (uint32_t k = 1; k < sh->procs; k++)
			all = reap(sh, k) && all;
		if (!all)
			nanosleep(&pause, NULL);
	} while (!all && fanout_now_ns() < deadline);
	for (uint32_t k = 1; k < sh->procs; k++)
		overdue[k] = !sh->reaped[k];
	fanout_procs_kill(sh);
}

int fanout_procs_collect(struct fanout_shared *sh, uint32_t timeout_ms,
			 struct fanout_result *res, char *why, size_t cap)
{
	bool overdue[FANOUT_PROCS_MAX] = { false };
	char how[48];
	int rc = 0;

	atomic_store_explicit(&sh->stop, 1, memory_order_release);
	wait_all(sh, timeout_ms, overdue);
	for (uint32_t k = 1; k < sh->procs; k++) {
		const struct fanout_proc_slot *slot = &sh->slots[k];
		bool done = atomic_load_explicit(&slot->done, memory_order_acquire);

		if (done && slot->run_rc == 0) {
			merge(res, &slot->res);
			continue;
		}
		if (rc < 0)
			continue;
		rc = -1;
		if (done)
			snprintf(why, cap, "harness process %u (pid %d) could not run: %s", k,
				 (int)sh->pids[k], strerror(-slot->run_rc));
		else if (overdue[k])
			snprintf(why, cap, "harness process %u (pid %d) did not report within %u ms",
				 k, (int)sh->pids[k], timeout_ms);
		else
			snprintf(why, cap, "harness process %u (pid %d) died: %s", k,
				 (int)sh->pids[k], describe(sh->status[k], how, sizeof(how)));
	}
	return rc;
}

void fanout_procs_kill(struct fanout_shared *sh)
{
	for (uint32_t k = 1; k < sh->procs; k++) {
		int status;

		if (sh->reaped[k])
			continue;
		kill(sh->pids[k], SIGKILL);
		if (waitpid(sh->pids[k], &status, 0) == sh->pids[k]) {
			sh->reaped[k] = true;
			sh->status[k] = status;
		}
	}
}
