/* `tern dev`: one broker and one edge in one process on one loop. The edge
 * reaches the broker through the backend interface (backend.h); issue 5 puts
 * the link between them. */
#include "dev.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "backend_local.h"
#include "broker.h"
#include "config.h"
#include "edge.h"
#include "frame.h"
#include "store.h"
#include "tern_limits.h"

struct dev {
	uv_loop_t loop;
	uv_async_t wake;
	uv_signal_t sigterm, sigint;
	uv_timer_t tick; /* queue ack timeouts and pull waits */
	struct tern_config cfg;
	struct broker *broker;
	struct backend_local *bl;
	struct edge *edge;
	int exit_code;
};

static void on_wake(uv_async_t *a)
{
	struct dev *d = a->data;
	broker_poll(d->broker);
}

static void notify(void *arg) { uv_async_send(arg); }

static void on_tick(uv_timer_t *t)
{
	struct dev *d = t->data;
	broker_tick(d->broker);
	broker_poll(d->broker);
}

static void queue_metric(struct fbuf *b, const char *name, const struct broker_qinfo *q,
			 uint64_t v)
{
	fbuf_printf(b, "%s{queue=", name);
	fbuf_put_jstr(b, q->name, q->name_len); /* a JSON string is a valid label value here */
	fbuf_printf(b, "} %llu\n", (unsigned long long)v);
}

static void queue_metrics(void *arg, const struct broker_qinfo *q)
{
	struct fbuf *b = arg;
	queue_metric(b, "tern_queue_ready", q, q->ready);
	queue_metric(b, "tern_queue_unacked", q, q->unacked);
	queue_metric(b, "tern_queue_consumers", q, q->consumers);
	queue_metric(b, "tern_queue_delivered_total", q, q->delivered);
	queue_metric(b, "tern_queue_redelivered_total", q, q->redelivered);
	queue_metric(b, "tern_queue_dead_lettered_total", q, q->dead_lettered);
}

static void metrics_extra(void *arg, struct fbuf *b)
{
	struct dev *d = arg;
	struct store_stats ss;
	struct broker_stats bs;
	broker_store_stats(d->broker, &ss);
	broker_get_stats(d->broker, &bs);
	fbuf_puts(b, "# HELP tern_store_batches_total Write transactions committed\n"
		     "# TYPE tern_store_batches_total counter\n");
	fbuf_printf(b, "tern_store_batches_total %llu\n", (unsigned long long)ss.batches);
	fbuf_puts(b, "# HELP tern_store_batch_messages_total Messages written by those transactions\n"
		     "# TYPE tern_store_batch_messages_total counter\n");
	fbuf_printf(b, "tern_store_batch_messages_total %llu\n", (unsigned long long)ss.batch_ops);
	fbuf_puts(b, "# HELP tern_store_commit_seconds Commit latency of one write transaction\n"
		     "# TYPE tern_store_commit_seconds histogram\n");
	uint64_t cum = 0;
	for (int i = 0; i < 12; i++) {
		cum += ss.commit_hist[i];
		if (i < 11)
			fbuf_printf(b, "tern_store_commit_seconds_bucket{le=\"%g\"} %llu\n",
				    store_commit_buckets_s[i], (unsigned long long)cum);
		else
			fbuf_printf(b, "tern_store_commit_seconds_bucket{le=\"+Inf\"} %llu\n",
				    (unsigned long long)cum);
	}
	fbuf_printf(b, "tern_store_commit_seconds_sum %.6f\ntern_store_commit_seconds_count %llu\n",
		    (double)ss.commit_us_sum / 1e6, (unsigned long long)ss.batches);
	fbuf_puts(b, "# HELP tern_broker_channels_active Channels with subscribers or writes in flight\n"
		     "# TYPE tern_broker_channels_active gauge\n");
	fbuf_printf(b, "tern_broker_channels_active %llu\n", (unsigned long long)bs.channels_active);
	fbuf_puts(b, "# HELP tern_publish_errors_total Publishes the store could not commit\n"
		     "# TYPE tern_publish_errors_total counter\n");
	fbuf_printf(b, "tern_publish_errors_total %llu\n", (unsigned long long)bs.publish_errors);
	fbuf_puts(b, "# HELP tern_queue_ready Messages ready for delivery\n# TYPE tern_queue_ready gauge\n"
		     "# HELP tern_queue_unacked Deliveries awaiting ack\n# TYPE tern_queue_unacked gauge\n"
		     "# HELP tern_queue_consumers WebSocket consumers\n# TYPE tern_queue_consumers gauge\n"
		     "# HELP tern_queue_delivered_total Deliveries made\n"
		     "# TYPE tern_queue_delivered_total counter\n"
		     "# HELP tern_queue_redelivered_total Deliveries with attempt > 1\n"
		     "# TYPE tern_queue_redelivered_total counter\n"
		     "# HELP tern_queue_dead_lettered_total Messages moved to dead letters\n"
		     "# TYPE tern_queue_dead_lettered_total counter\n");
	broker_queue_each(d->broker, queue_metrics, b);
}

static void on_edge_stopped(void *arg)
{
	struct dev *d = arg;
	uv_close((uv_handle_t *)&d->tick, NULL);
	backend_local_close(d->bl);
	broker_close(d->broker); /* commits what is queued; answers every publisher */
	d->broker = NULL;
	uv_close((uv_handle_t *)&d->wake, NULL);
	fprintf(stderr, "tern: stopped\n");
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct dev *d = h->data;
	fprintf(stderr, "tern: %s received, draining\n", signum == SIGTERM ? "SIGTERM" : "SIGINT");
	uv_close((uv_handle_t *)&d->sigterm, NULL);
	uv_close((uv_handle_t *)&d->sigint, NULL);
	broker_pulls_release(d->broker); /* long-polls get their (empty) answer */
	edge_shutdown(d->edge, on_edge_stopped, d);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: tern dev [--listen HOST:PORT] [--data DIR] [--config FILE]\n");
}

/* Config file first, then flags over it. Returns 0, or an exit code. */
static int parse_args(struct dev *d, int argc, char **argv)
{
	static const struct option opts[] = {
		{"listen", required_argument, NULL, 'l'},
		{"data", required_argument, NULL, 'd'},
		{"config", required_argument, NULL, 'c'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	char err[512];
	int c;
	config_defaults(&d->cfg);
	for (int pass = 0; pass < 2; pass++) {
		optind = 1;
		opterr = 0; /* one line of our own, not getopt's two */
		while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
			const char *key = c == 'l' ? "listen" : c == 'd' ? "data_dir" : NULL;
			if (c == 'h') {
				usage(stdout);
				return -1;
			}
			if (c == '?' || c == ':') {
				fprintf(stderr, "tern: bad option '%s' for 'tern dev' (try 'tern help')\n",
					argv[optind - 1]);
				return 2;
			}
			if (pass == 0 && c == 'c' && config_load_file(&d->cfg, optarg, err, sizeof(err))) {
				fprintf(stderr, "tern: %s\n", err);
				return 2;
			}
			if (pass == 1 && key && config_set(&d->cfg, key, optarg, err, sizeof(err))) {
				fprintf(stderr, "tern: %s\n", err);
				return 2;
			}
		}
		if (optind < argc) {
			fprintf(stderr, "tern: unexpected argument '%s'\n", argv[optind]);
			return 2;
		}
	}
	return 0;
}

int tern_dev_main(int argc, char **argv)
{
	struct dev *d = calloc(1, sizeof(*d));
	char why[512];
	int rc = parse_args(d, argc, argv);
	if (rc != 0) {
		free(d);
		return rc < 0 ? 0 : rc;
	}
	signal(SIGPIPE, SIG_IGN);
	lws_set_log_level(LLL_ERR, NULL);
	uv_loop_init(&d->loop);
	uv_async_init(&d->loop, &d->wake, on_wake);
	d->wake.data = d;
	struct broker_config bc = {
		.data_dir = d->cfg.data_dir,
		.sync_full = d->cfg.store_sync_full,
		.max_message_bytes = d->cfg.max_message_bytes,
		.history_messages = (uint32_t)d->cfg.history_max_messages,
		.history_age_ms = d->cfg.history_max_age_s * 1000,
		.idem_window_ms = d->cfg.idempotency_window_s * 1000,
		.sweep_interval_ms = d->cfg.store_sweep_interval_ms,
		.notify = notify,
		.notify_arg = &d->wake,
		.queue_max_depth = d->cfg.queue_max_depth,
	};
	if (broker_open(&d->broker, &bc, why, sizeof(why)) != 0) {
		fprintf(stderr, "tern: %s\n", why);
		rc = 1;
		goto out_close_wake;
	}
	d->bl = backend_local_new(&d->loop, d->broker);
	struct edge_config ec = {
		.loop = &d->loop, .cfg = &d->cfg, .be_ops = &backend_local_ops, .be = d->bl,
		.metrics_extra = metrics_extra, .metrics_arg = d,
	};
	if (!d->bl || edge_start(&d->edge, &ec, why, sizeof(why)) != 0) {
		fprintf(stderr, "tern: %s\n", d->bl ? why : "out of memory");
		rc = 1;
		goto out_close_broker;
	}
	uv_timer_init(&d->loop, &d->tick);
	d->tick.data = d;
	uv_timer_start(&d->tick, on_tick, TERN_QUEUE_TICK_MS, TERN_QUEUE_TICK_MS);
	uv_signal_init(&d->loop, &d->sigterm);
	uv_signal_init(&d->loop, &d->sigint);
	d->sigterm.data = d->sigint.data = d;
	uv_signal_start(&d->sigterm, on_signal, SIGTERM);
	uv_signal_start(&d->sigint, on_signal, SIGINT);
	fprintf(stderr,
		"tern %s dev: listening on http://%s (WebSocket ws://%s/v1/ws), data in %s, "
		"store sync %s; auth is off (no keys configured)\n",
		TERN_VERSION, d->cfg.listen, d->cfg.listen, d->cfg.data_dir,
		d->cfg.store_sync_full ? "full" : "normal");
	uv_run(&d->loop, UV_RUN_DEFAULT);
	edge_free(d->edge);
	uv_run(&d->loop, UV_RUN_DEFAULT);
	rc = uv_loop_close(&d->loop) == 0 ? 0 : 1;
	if (rc)
		fprintf(stderr, "tern: loop closed with handles open\n");
	free(d);
	return rc;

out_close_broker:
	if (d->bl)
		backend_local_close(d->bl);
	broker_close(d->broker);
out_close_wake:
	uv_close((uv_handle_t *)&d->wake, NULL);
	uv_run(&d->loop, UV_RUN_DEFAULT);
	uv_loop_close(&d->loop);
	free(d);
	return rc;
}
