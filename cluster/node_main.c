/* `tern node`: one broker served over links (node_svc), with the ops HTTP (/healthz,
 * /metrics) on the same port (portmux). */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "broker.h"
#include "broker_metrics.h"
#include "config.h"
#include "link.h"
#include "node_main.h"
#include "node_svc.h"
#include "tern_limits.h"
#ifdef TERN_HAVE_PORTMUX
#include "portmux.h"
#define NODE_SERVES "links and HTTP (/healthz, /metrics)"
#else
#define NODE_SERVES "links (no ops HTTP: this build has no portmux.c)"
#endif

/* Calls in flight get this long to finish after SIGTERM before their links are closed. */
#define NODE_DRAIN_GRACE_MS 10000
/* Connections being sniffed or answered at once on the node's port. */
#define NODE_PENDING_CONNS_MAX 1024

struct node {
	uv_loop_t loop;
	uv_async_t wake;
	uv_signal_t sigterm, sigint;
	uv_timer_t tick; /* queue ack timeouts and pull waits */
	struct tern_config cfg;
	struct broker *broker;
	struct node_svc *svc;
#ifdef TERN_HAVE_PORTMUX
	struct portmux *mux;
#endif
	char host[256];
	int port;
	bool draining;
};

static void on_wake(uv_async_t *a)
{
	struct node *n = a->data;
	broker_poll(n->broker);
}

static void notify(void *arg) { uv_async_send(arg); }

static void on_tick(uv_timer_t *t)
{
	struct node *n = t->data;
	broker_tick(n->broker);
	broker_poll(n->broker);
}

static void stopped(void *arg)
{
	struct node *n = arg;
	uv_close((uv_handle_t *)&n->tick, NULL);
	broker_close(n->broker); /* commits what is queued; answers every publisher */
	n->broker = NULL;
	uv_close((uv_handle_t *)&n->wake, NULL);
	fprintf(stderr, "tern: stopped\n");
}

static void on_drained(void *arg)
{
	struct node *n = arg;
#ifdef TERN_HAVE_PORTMUX
	portmux_close(n->mux, stopped, n);
	n->mux = NULL;
#else
	stopped(n);
#endif
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct node *n = h->data;
	fprintf(stderr, "tern: %s received, draining\n", signum == SIGTERM ? "SIGTERM" : "SIGINT");
	uv_close((uv_handle_t *)&n->sigterm, NULL);
	uv_close((uv_handle_t *)&n->sigint, NULL);
	n->draining = true;
	node_svc_drain(n->svc, NODE_DRAIN_GRACE_MS, on_drained, n);
}

#ifdef TERN_HAVE_PORTMUX
static int on_link(void *arg, uv_os_sock_t fd, const uint8_t *first, size_t len)
{
	struct node *n = arg;
	tern_link *l;
	if (n->draining)
		return -1;
	if (link_adopt(&n->loop, node_svc_link_config(n->svc), fd, first, len, &l) != 0)
		return -1;
	node_svc_adopt(n->svc, l);
	return 0;
}

static char *text(const char *s, size_t *len)
{
	*len = strlen(s);
	return strdup(s);
}

static void on_http(void *arg, const char *path, size_t path_len, int *status, const char **ctype,
		    char **body, size_t *body_len)
{
	struct node *n = arg;
	*ctype = "text/plain; charset=utf-8";
	if (path_len == 8 && memcmp(path, "/healthz", 8) == 0) {
		*status = n->draining ? 503 : 200;
		*body = text(n->draining ? "draining\n" : "ok\n", body_len);
	} else if (path_len == 8 && memcmp(path, "/metrics", 8) == 0) {
		FILE *f = open_memstream(body, body_len);
		if (!f) {
			*status = 500;
			*body = NULL;
			*body_len = 0;
			return;
		}
		broker_metrics_write(n->broker, f);
		node_svc_metrics(n->svc, f);
		fclose(f);
		*status = 200;
		*ctype = "text/plain; version=0.0.4";
	} else {
		*status = 404;
		*body = text("not found\n", body_len);
	}
	if (!*body)
		*body_len = 0;
}

/* Returns 0, or -1 after one line on stderr. */
static int serve(struct node *n)
{
	char why[256];
	struct portmux_config mc = {
		.loop = &n->loop, .host = n->host, .port = n->port,
		.handshake_timeout_ms = n->cfg.handshake_timeout_s * 1000,
		.max_pending = NODE_PENDING_CONNS_MAX,
		.on_link = on_link, .on_http = on_http, .arg = n,
	};
	if (portmux_start(&n->mux, &mc, why, sizeof(why)) != 0) {
		fprintf(stderr, "tern: %s\n", why);
		return -1;
	}
	n->port = portmux_port(n->mux);
	return 0;
}
#else
/* Until portmux.c is merged: links only, without the ops HTTP. */
static int serve(struct node *n)
{
	int rc = node_svc_listen(n->svc, n->host, n->port);
	if (rc) {
		fprintf(stderr, "tern: cannot listen on %s: %s\n", n->cfg.listen, strerror(-rc));
		return -1;
	}
	n->port = node_svc_port(n->svc);
	return 0;
}
#endif

static void usage(FILE *f)
{
	fprintf(f, "usage: tern node --id ID --listen HOST:PORT [--region R] [--data DIR] "
		   "[--join HOST:PORT,...] [--config FILE]\n");
}

/* Config file first, then flags over it. Returns 0, -1 after --help, or an exit code. */
static int parse_args(struct node *n, int argc, char **argv)
{
	static const struct option opts[] = {
		{"id", required_argument, NULL, 'i'},
		{"region", required_argument, NULL, 'r'},
		{"listen", required_argument, NULL, 'l'},
		{"data", required_argument, NULL, 'd'},
		{"join", required_argument, NULL, 'j'},
		{"config", required_argument, NULL, 'c'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct tern_config defaults;
	char err[512];
	const char *join = NULL;
	bool listen_flag = false;
	int c;
	config_defaults(&n->cfg);
	config_defaults(&defaults);
	for (int pass = 0; pass < 2; pass++) {
		optind = 1;
		opterr = 0; /* one line of our own, not getopt's two */
		while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
			const char *key = c == 'i' ? "node_id" : c == 'r' ? "region"
					: c == 'l' ? "listen" : c == 'd' ? "data_dir" : NULL;
			if (c == 'h') {
				usage(stdout);
				return -1;
			}
			if (c == '?' || c == ':') {
				fprintf(stderr, "tern: bad option '%s' for 'tern node' (try 'tern help')\n",
					argv[optind - 1]);
				return 2;
			}
			if (c == 'j')
				join = optarg;
			if (c == 'l')
				listen_flag = true;
			if (pass == 0 && c == 'c' && config_load_file(&n->cfg, optarg, err, sizeof(err))) {
				fprintf(stderr, "tern: %s\n", err);
				return 2;
			}
			if (pass == 1 && key && config_set(&n->cfg, key, optarg, err, sizeof(err))) {
				fprintf(stderr, "tern: %s\n", err);
				return 2;
			}
		}
		if (optind < argc) {
			fprintf(stderr, "tern: unexpected argument '%s'\n", argv[optind]);
			return 2;
		}
	}
	if (!n->cfg.node_id[0]) {
		fprintf(stderr, "tern: 'tern node' needs --id ID\n");
		return 2;
	}
	/* A config file's listen counts when it differs from tern dev's default. */
	if (!listen_flag && strcmp(n->cfg.listen, defaults.listen) == 0) {
		fprintf(stderr, "tern: 'tern node' needs --listen HOST:PORT\n");
		return 2;
	}
	if (config_split_hostport(n->cfg.listen, n->host, sizeof(n->host), &n->port) != 0) {
		fprintf(stderr, "tern: bad --listen '%s' (HOST:PORT)\n", n->cfg.listen);
		return 2;
	}
	if (join)
		fprintf(stderr, "tern: --join %s accepted but not used yet (one node)\n", join);
	return 0;
}

static void start_loop(struct node *n)
{
	uv_timer_init(&n->loop, &n->tick);
	n->tick.data = n;
	uv_timer_start(&n->tick, on_tick, TERN_QUEUE_TICK_MS, TERN_QUEUE_TICK_MS);
	uv_signal_init(&n->loop, &n->sigterm);
	uv_signal_init(&n->loop, &n->sigint);
	n->sigterm.data = n->sigint.data = n;
	uv_signal_start(&n->sigterm, on_signal, SIGTERM);
	uv_signal_start(&n->sigint, on_signal, SIGINT);
	fprintf(stderr,
		"tern %s node %s region %s: %s on %s:%d, data in %s, store sync %s\n",
		TERN_VERSION, n->cfg.node_id, n->cfg.region, NODE_SERVES, n->host, n->port,
		n->cfg.data_dir,
		n->cfg.store_sync_full ? "full" : "normal");
}

int tern_node_main(int argc, char **argv)
{
	struct node *n = calloc(1, sizeof(*n));
	char why[512];
	if (!n) {
		fprintf(stderr, "tern: out of memory\n");
		return 1;
	}
	int rc = parse_args(n, argc, argv);
	if (rc != 0) {
		free(n);
		return rc < 0 ? 0 : rc;
	}
	signal(SIGPIPE, SIG_IGN);
	uv_loop_init(&n->loop);
	uv_async_init(&n->loop, &n->wake, on_wake);
	n->wake.data = n;
	struct broker_config bc = {
		.data_dir = n->cfg.data_dir,
		.sync_full = n->cfg.store_sync_full,
		.max_message_bytes = n->cfg.max_message_bytes,
		.history_messages = (uint32_t)n->cfg.history_max_messages,
		.history_age_ms = n->cfg.history_max_age_s * 1000,
		.idem_window_ms = n->cfg.idempotency_window_s * 1000,
		.sweep_interval_ms = n->cfg.store_sweep_interval_ms,
		.notify = notify,
		.notify_arg = &n->wake,
		.queue_max_depth = n->cfg.queue_max_depth,
	};
	if (broker_open(&n->broker, &bc, why, sizeof(why)) != 0) {
		fprintf(stderr, "tern: %s\n", why);
		rc = 1;
		goto out_close_wake;
	}
	struct node_svc_config sc = {
		.loop = &n->loop, .broker = n->broker, .cfg = &n->cfg, .log = stderr,
	};
	if (node_svc_new(&n->svc, &sc) != 0) {
		fprintf(stderr, "tern: cannot create the node's services\n");
		rc = 1;
		goto out_close_broker;
	}
	if (serve(n) != 0) {
		rc = 1;
		goto out_free_svc;
	}
	start_loop(n);
	uv_run(&n->loop, UV_RUN_DEFAULT);
	node_svc_free(n->svc);
	rc = uv_loop_close(&n->loop) == 0 ? 0 : 1;
	if (rc)
		fprintf(stderr, "tern: loop closed with handles open\n");
	free(n);
	return rc;

out_free_svc:
	node_svc_free(n->svc);
out_close_broker:
	broker_close(n->broker);
out_close_wake:
	uv_close((uv_handle_t *)&n->wake, NULL);
	uv_run(&n->loop, UV_RUN_DEFAULT);
	uv_loop_close(&n->loop);
	free(n);
	return rc;
}
