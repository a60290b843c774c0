/* `tern dev`: one node and one edge in one process, on one loop, joined by the same link
 * code as in production over a real loopback socket: the node serves links on an ephemeral
 * 127.0.0.1 port, the edge dials it (one control link and K data links). */
#include "dev.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "args.h"
#include "backend_link.h"
#include "broker_host.h"
#include "broker_metrics.h"
#include "config.h"
#include "edge.h"
#include "edge_main.h"
#include "frame.h"
#include "nofile.h"
#include "node_svc.h"
#include "tern_limits.h"

/* In-flight link calls get this long after the edge stopped (they are usually done). */
#define DEV_DRAIN_GRACE_MS 5000

struct dev {
	uv_loop_t loop;
	uv_signal_t sigterm, sigint;
	struct tern_config cfg;
	struct broker_host host;
	struct node_svc *svc;
	struct backend_link *bl;
	struct edge *edge;
	struct nofile nofile; /* open files limit, logged once started */
};

static void write_metrics(void *arg, FILE *out)
{
	struct dev *d = arg;
	broker_metrics_write(d->host.broker, out);
	backend_link_metrics(d->bl, out);
}

static void metrics_extra(void *arg, struct fbuf *b) { metrics_from_file(b, write_metrics, arg); }

static void on_node_drained(void *arg)
{
	struct dev *d = arg;
	broker_host_close(&d->host); /* commits what is queued; answers every publisher */
	fprintf(stderr, "tern: stopped\n");
}

static void on_node_failed(void *arg)
{
	struct dev *d = arg;
	broker_host_close(&d->host);
}

static void on_links_closed(void *arg)
{
	struct dev *d = arg;
	node_svc_drain(d->svc, DEV_DRAIN_GRACE_MS, on_node_drained, d);
}

static void on_edge_stopped(void *arg)
{
	struct dev *d = arg;
	backend_link_close(d->bl, on_links_closed, d);
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct dev *d = h->data;
	fprintf(stderr, "tern: %s received, draining\n", signum == SIGTERM ? "SIGTERM" : "SIGINT");
	uv_close((uv_handle_t *)&d->sigterm, NULL);
	uv_close((uv_handle_t *)&d->sigint, NULL);
	broker_pulls_release(d->host.broker); /* long-polls get their (empty) answer */
	edge_shutdown(d->edge, on_edge_stopped, d);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: tern dev [--listen HOST:PORT] [--data DIR] [--config FILE]\n");
}

int tern_dev_main(int argc, char **argv)
{
	static const struct arg_flag flags[] = {
		{"listen", "listen"}, {"data", "data_dir"}, {NULL, NULL},
	};
	struct dev *d = calloc(1, sizeof(*d));
	char why[512];
	if (!d)
		return 1;
	int rc = args_parse("dev", argc, argv, flags, &d->cfg, usage);
	if (rc == 0 && d->cfg.workers > 1) {
		fprintf(stderr, "tern: workers %llu: tern dev is one process; run tern node and "
				"tern edge --workers W for several\n",
			(unsigned long long)d->cfg.workers);
		rc = 2;
	}
	if (rc != 0) {
		free(d);
		return rc < 0 ? 0 : rc;
	}
	if (!d->cfg.node_id[0])
		snprintf(d->cfg.node_id, sizeof(d->cfg.node_id), "dev");
	signal(SIGPIPE, SIG_IGN);
	lws_set_log_level(LLL_ERR, NULL);
	nofile_raise(&d->nofile);
	if (args_loop_init(&d->loop) != 0) {
		free(d);
		return 1;
	}
	if (broker_host_open(&d->host, &d->loop, &d->cfg, why, sizeof(why)) != 0) {
		fprintf(stderr, "tern: %s\n", why);
		rc = 1;
		goto out;
	}
	struct node_svc_config sc = {
		.loop = &d->loop, .broker = d->host.broker, .cfg = &d->cfg, .log = stderr,
	};
	int lrc = node_svc_new(&d->svc, &sc) != 0 ? -ENOMEM : node_svc_listen(d->svc, "127.0.0.1", 0);
	if (lrc != 0) {
		fprintf(stderr, "tern: cannot start the node's link listener on 127.0.0.1: %s\n",
			strerror(-lrc));
		rc = 1;
		goto out_node;
	}
	snprintf(d->cfg.nodes, sizeof(d->cfg.nodes), "127.0.0.1:%d", node_svc_port(d->svc));
	d->bl = backend_link_new(&d->loop, &d->cfg, stderr, why, sizeof(why));
	if (!d->bl) {
		fprintf(stderr, "tern: %s\n", why);
		rc = 1;
		goto out_node;
	}
	struct edge_config ec = {
		.loop = &d->loop, .cfg = &d->cfg, .be_ops = &backend_link_ops, .be = d->bl,
		.metrics_extra = metrics_extra, .metrics_arg = d,
	};
	if (edge_start(&d->edge, &ec, why, sizeof(why)) != 0) {
		fprintf(stderr, "tern: %s\n", why);
		rc = 1;
		backend_link_close(d->bl, NULL, NULL);
		goto out_node;
	}
	uv_signal_init(&d->loop, &d->sigterm);
	uv_signal_init(&d->loop, &d->sigint);
	d->sigterm.data = d->sigint.data = d;
	uv_signal_start(&d->sigterm, on_signal, SIGTERM);
	uv_signal_start(&d->sigint, on_signal, SIGINT);
	fprintf(stderr,
		"tern %s dev: listening on http://%s (WebSocket ws://%s/v1/ws), data in %s, "
		"store sync %s, node and edge linked over %s; auth is off (no keys configured)\n",
		TERN_VERSION, d->cfg.listen, d->cfg.listen, d->cfg.data_dir,
		d->cfg.store_sync_full ? "full" : "normal", d->cfg.nodes);
	nofile_log(&d->nofile, (uint64_t)TERN_EDGE_CLIENTS_TARGET + TERN_NOFILE_RESERVE, 1, stderr);
	uv_run(&d->loop, UV_RUN_DEFAULT);
	edge_free(d->edge);
	uv_run(&d->loop, UV_RUN_DEFAULT);
	node_svc_free(d->svc);
	rc = uv_loop_close(&d->loop) == 0 ? 0 : 1;
	if (rc)
		fprintf(stderr, "tern: loop closed with handles open\n");
	free(d);
	return rc;

out_node:
	if (d->svc)
		node_svc_drain(d->svc, 0, on_node_failed, d); /* then the broker closes */
	else
		broker_host_close(&d->host);
out:
	uv_run(&d->loop, UV_RUN_DEFAULT);
	node_svc_free(d->svc);
	uv_loop_close(&d->loop);
	free(d);
	return rc;
}
