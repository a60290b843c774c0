/* `tern node`: one broker served over links (node_svc), with the ops HTTP (/healthz,
 * /metrics) on the same port (portmux). */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "args.h"
#include "broker.h"
#include "broker_host.h"
#include "broker_metrics.h"
#include "config.h"
#include "link.h"
#include "node_main.h"
#include "node_svc.h"
#include "nofile.h"
#include "tern_limits.h"
#include "portmux.h"

/* Calls in flight get this long to finish after SIGTERM before their links are closed. */
#define NODE_DRAIN_GRACE_MS 10000
/* Connections being sniffed or answered at once on the node's port. */
#define NODE_PENDING_CONNS_MAX 1024

struct node {
	uv_loop_t loop;
	uv_signal_t sigterm, sigint;
	struct tern_config cfg;
	struct broker_host bh;
	struct node_svc *svc;
	struct portmux *mux;
	char host[256];
	int port;
	bool draining;
	struct nofile nofile; /* open files limit, logged once started */
};

static void stopped(void *arg)
{
	struct node *n = arg;
	broker_host_close(&n->bh); /* commits what is queued; answers every publisher */
	fprintf(stderr, "tern: stopped\n");
}

static void on_drained(void *arg)
{
	struct node *n = arg;
	portmux_close(n->mux, stopped, n);
	n->mux = NULL;
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
		broker_metrics_write(n->bh.broker, f);
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

static void usage(FILE *f)
{
	fprintf(f, "usage: tern node --id ID --listen HOST:PORT [--region R] [--data DIR] "
		   "[--join HOST:PORT,...] [--config FILE]\n");
}

/* Returns 0, -1 after --help, or an exit code. */
static int parse_args(struct node *n, int argc, char **argv)
{
	static const struct arg_flag flags[] = {
		{"id", "node_id"}, {"region", "region"}, {"listen", "listen"},
		{"data", "data_dir"}, {"join", "join"}, {NULL, NULL},
	};
	int rc = args_parse("node", argc, argv, flags, &n->cfg, usage);
	if (rc != 0)
		return rc;
	if (!n->cfg.node_id[0]) {
		fprintf(stderr, "tern: 'tern node' needs --id ID\n");
		return 2;
	}
	if (!n->cfg.listen_set) { /* tern dev's default port is no default for a node */
		fprintf(stderr, "tern: 'tern node' needs --listen HOST:PORT\n");
		return 2;
	}
	if (config_split_hostport(n->cfg.listen, n->host, sizeof(n->host), &n->port) != 0) {
		fprintf(stderr, "tern: bad --listen '%s' (HOST:PORT)\n", n->cfg.listen);
		return 2;
	}
	if (n->cfg.join[0])
		fprintf(stderr, "tern: --join %s accepted but not used yet (nodes do not peer in "
				"this version)\n", n->cfg.join);
	return 0;
}

static void start_loop(struct node *n)
{
	uv_signal_init(&n->loop, &n->sigterm);
	uv_signal_init(&n->loop, &n->sigint);
	n->sigterm.data = n->sigint.data = n;
	uv_signal_start(&n->sigterm, on_signal, SIGTERM);
	uv_signal_start(&n->sigint, on_signal, SIGINT);
	fprintf(stderr,
		"tern %s node %s region %s: links and HTTP (/healthz, /metrics) on %s:%d, data in %s, "
		"store sync %s\n",
		TERN_VERSION, n->cfg.node_id, n->cfg.region, n->host, n->port,
		n->cfg.data_dir,
		n->cfg.store_sync_full ? "full" : "normal");
	/* Links: (1 + K) per edge process (each edge worker is one). */
	nofile_log(&n->nofile, 0, 1, stderr);
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
	nofile_raise(&n->nofile);
	if (args_loop_init(&n->loop) != 0) {
		free(n);
		return 1;
	}
	if (broker_host_open(&n->bh, &n->loop, &n->cfg, why, sizeof(why)) != 0) {
		fprintf(stderr, "tern: %s\n", why);
		rc = 1;
		goto out_loop;
	}
	struct node_svc_config sc = {
		.loop = &n->loop, .broker = n->bh.broker, .cfg = &n->cfg, .log = stderr,
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
	broker_host_close(&n->bh);
out_loop:
	uv_run(&n->loop, UV_RUN_DEFAULT);
	uv_loop_close(&n->loop);
	free(n);
	return rc;
}
