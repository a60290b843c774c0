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

/* --- queues (additions for test_queue*.c) --- */

/* Consumers a test may record, deliveries each may hold; pulls likewise. */
#define H_CONSUMERS 8
#define H_CONSUMER_MSGS 256
#define H_PULLS 4
#define H_PULL_MSGS 64

/* One delivery as a consumer or a pull saw it: copies of the strings, and a
 * reference to the message. */
struct h_delivery {
	char queue[TERN_NAME_MAX_BYTES + 1];
	char delivery_id[48];
	struct tern_msg *msg;
	bool from_channel;
	uint32_t attempt;
};

/* A recording consumer (h->cons[i]). */
struct consumer {
	struct h *h;
	struct broker_consumer *c; /* NULL once cancelled */
	struct h_delivery got[H_CONSUMER_MSGS];
	size_t n;
	/* Run from inside the delivery callback, after recording. */
	void (*hook)(struct consumer *c, const struct broker_delivery *d);
	void *hook_arg;
};

/* A recording pull (h->pulls[i]). */
struct pull_result {
	struct h *h;
	struct broker_pull *p; /* NULL once answered or cancelled */
	int calls;	       /* must end at exactly 1, or 0 when cancelled */
	int err;
	struct h_delivery got[H_PULL_MSGS];
	size_t n;
	size_t total; /* deliveries in the answer, recorded or not */
	/* Run from inside the callback, after recording. */
	void (*hook)(struct pull_result *r);
	void *hook_arg;
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
	/* Queues: teardown cancels consumers and unanswered pulls still here. */
	struct consumer cons[H_CONSUMERS];
	struct pull_result pulls[H_PULLS];
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

/* --- queues --- */

/* h_advance(ms), then broker_tick and broker_poll: ack timeouts and pull
 * waits that are due expire now. */
void h_tick(struct h *h, int64_t ms);

/* Enqueues data (a NUL-terminated string) and returns broker_enqueue's
 * result; on 0 r->calls becomes 1 later. h_enq also waits for the callback
 * and returns its err (or the immediate error). */
int h_enq_async(struct h *h, const char *queue, const char *data, const char *idem,
		struct pub_result *r);
int h_enq(struct h *h, const char *queue, const char *data, const char *idem,
	  struct pub_result *r);

/* Registers consumer i on queue; returns broker_consume's result. */
int h_consume(struct h *h, int i, const char *queue, uint32_t prefetch);
/* broker_consumer_cancel on consumer i (its records stay). */
void h_cancel(struct h *h, int i);
/* Cancels every consumer still registered (before h_close/h_reopen). */
void h_cancel_all(struct h *h);
/* Drops consumer i's recorded deliveries. */
void h_consumer_forget(struct h *h, int i);

int h_ack(struct h *h, const char *queue, const char *delivery_id);
int h_nack(struct h *h, const char *queue, const char *delivery_id, bool requeue);

/* Starts pull i (its result reset first); returns broker_pull's result. */
int h_pull(struct h *h, int i, const char *queue, uint32_t max, uint64_t wait_ms);
/* broker_pull_cancel on pull i. */
void h_pull_cancel(struct h *h, int i);

/* Configures and waits for the commit; returns the immediate error or the
 * callback's err. Fails the test when the callback does not run exactly once. */
int h_qconf(struct h *h, const char *queue, const struct broker_qconf *conf);
/* Binds queue to patterns (a NULL-terminated list; none: unbind). */
int h_bind(struct h *h, const char *queue, const char *const *patterns);
/* broker_queue_info, failing the test on error. */
void h_qinfo(struct h *h, const char *queue, struct broker_qinfo *out);

/* Enqueues "m<first>".."m<last>", each durable before the next; ids[k] gets
 * the id of m<first+k> when ids is not NULL. */
void h_enq_range(struct h *h, const char *queue, int first, int last,
		 char (*ids)[TERN_MSG_ID_MAX]);

/* Checks that fail the test at the caller's line: a message's data or
 * channel is exactly s; a delivery is of queue, with data and attempt. */
#define h_assert_data(m, s) h_check_data(m, s, __FILE__, __LINE__)
#define h_assert_chan(m, s) h_check_chan(m, s, __FILE__, __LINE__)
#define h_assert_got(d, q, s, a) h_check_got(d, q, s, a, __FILE__, __LINE__)
void h_check_data(const struct tern_msg *m, const char *s, const char *file, int line);
void h_check_chan(const struct tern_msg *m, const char *s, const char *file, int line);
void h_check_got(const struct h_delivery *d, const char *queue, const char *data,
		 uint32_t attempt, const char *file, int line);

/* Runs sql (one row, one integer column; ?1 bound to arg when not NULL) on
 * h->dir/tern.db through a read-only connection of its own: what another
 * process would find on disk. */
int h_db_int(struct h *h, const char *sql, const char *arg);

/* Runs the cmocka group, or, with argv[1], only the test of that exact name
 * (ctest registers each test on its own). An unknown name is a failure. */
int h_run(const char *group, const struct CMUnitTest *tests, size_t n, int argc, char **argv);

#endif
