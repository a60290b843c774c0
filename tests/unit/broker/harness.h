/* Test harness for the broker: drives a real broker over real SQLite files in
 * a fresh temp dir, without libuv. The store thread's cfg.notify signals a
 * condition variable; the h_wait_* helpers call broker_poll() in between and
 * give up after H_WAIT_MS, failing the test. Time is a fake clock the test
 * moves with h_advance(). Every helper fails the running cmocka test on error. */
#ifndef TERN_TEST_HARNESS_H
#define TERN_TEST_HARNESS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include <pthread.h>

#include "broker.h"
#include "msg.h"

/* broker/ is renaming err.h and limits.h (they clash with <err.h> and
 * <limits.h>); take whichever this tree has. */
#if __has_include("tern_err.h")
#include "tern_err.h"
#include "tern_limits.h"
#else
#include "err.h"
#include "limits.h"
#endif

/* The longest any wait for a callback may take before the test fails. */
#define H_WAIT_MS 5000
/* Subscribers a test may record, and messages each may hold. */
#define H_RECORDERS 8
#define H_RECORDER_MSGS 4096

/* A fixed start for the fake clock: 2026-01-01T00:00:00Z. */
#define H_T0_MS 1767225600000LL

struct h;

/* A recording subscriber. It keeps a reference to every message it gets. */
struct recorder {
	struct h *h;
	struct broker_sub *sub; /* NULL once unsubscribed */
	uint64_t last_seq;	/* what broker_subscribe returned */
	struct tern_msg *msgs[H_RECORDER_MSGS];
	size_t n;
	/* Tests of re-entrancy: after this many messages (0: never), the
	 * callback runs on_msg_hook once from inside the fan-out. */
	size_t hook_after;
	void (*on_msg_hook)(struct recorder *r);
	void *hook_arg;
};

/* The answer to one publish. */
struct pub_result {
	int calls; /* how many times the callback ran: must end at exactly 1 */
	int err;
	uint64_t seq;
	char id[TERN_MSG_ID_MAX];
	void (*hook)(struct pub_result *r); /* run from inside the callback */
	void *hook_arg;
};

/* The answer to one history read; h_hist_free releases it. */
struct hist_result {
	int calls;
	int err;
	struct tern_msg **msgs;
	size_t n;
};

struct h {
	char dir[256];
	struct broker_config cfg; /* set by h_setup; tests may change it before h_open */
	struct broker *b;
	int64_t clock_ms; /* the fake clock, read by the store thread too (atomics) */

	pthread_mutex_t mu;
	pthread_cond_t cond;
	bool notified;
	uint64_t notifies;

	struct recorder rec[H_RECORDERS];
};

/* cmocka setup/teardown: a fresh temp dir and defaults in h->cfg (history
 * 1000 messages / 24 h, idempotency 2 min, fake clock at H_T0_MS); teardown
 * unsubscribes recorders still subscribed, closes the broker and removes the
 * dir. */
int h_setup(void **state);
int h_teardown(void **state);
/* A test with the harness fixture in *state. */
#define cmocka_unit_test_h(f) cmocka_unit_test_setup_teardown(f, h_setup, h_teardown)

/* Opens h->b with h->cfg, failing the test on error. */
void h_open(struct h *h);
/* broker_close, then h->b is NULL. */
void h_close(struct h *h);
/* h_close then h_open: the same data dir, as a restart does. */
void h_reopen(struct h *h);

void h_advance(struct h *h, int64_t ms);
int64_t h_now(struct h *h);

/* Polls until *counter >= want or H_WAIT_MS passed; returns whether it got
 * there. */
bool h_wait_count(struct h *h, const int *counter, int want);
bool h_wait_size(struct h *h, const size_t *counter, size_t want);
/* Polls for a short while so that any stray callback would have run. */
void h_settle(struct h *h);

/* Publishes and returns broker_publish's result; on 0 r->calls becomes 1
 * later (see h_wait_count). data is a NUL-terminated string. */
int h_pub_async(struct h *h, const char *chan, const char *data, const char *idem,
		struct pub_result *r);
/* Publishes and waits for the callback; returns its err (or the immediate
 * error). Fails the test when the callback does not run exactly once. */
int h_pub(struct h *h, const char *chan, const char *data, const char *idem,
	  struct pub_result *r);
/* Publishes a full request and waits. */
int h_pub_req(struct h *h, const struct broker_pub *p, struct pub_result *r);

/* Reads history synchronously; returns its err or the immediate error. */
int h_hist(struct h *h, const char *chan, uint64_t after, uint64_t before, uint32_t limit,
	   bool backwards, struct hist_result *r);
void h_hist_free(struct hist_result *r);

/* Runs a sweep and waits for its callback; returns its err. */
int h_sweep(struct h *h);

/* Subscribes recorder i (clients 1); returns broker_subscribe's result. */
int h_sub(struct h *h, int i, const char *chan);
int h_sub_clients(struct h *h, int i, const char *chan, uint32_t clients);
void h_unsub(struct h *h, int i);

/* Asserts recorder i holds exactly messages first..last (seq order), each
 * with data "m<seq>". */
void h_assert_seqs(struct h *h, int i, uint64_t first, uint64_t last);

/* A channel's last seq and subscribers through broker_channel_info. */
uint64_t h_last_seq(struct h *h, const char *chan);
uint64_t h_subscribers(struct h *h, const char *chan);

/* Runs the cmocka group, or, with argv[1], only the test of that exact name
 * (ctest registers each test on its own). An unknown name is a failure. */
int h_run(const char *group, const struct CMUnitTest *tests, size_t n, int argc, char **argv);

#endif
