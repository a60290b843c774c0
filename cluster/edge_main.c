/* `tern edge`: terminates clients and reaches its nodes over links (backend_link.c). */
#include "edge_main.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#include "args.h"
#include "backend_link.h"
#include "config.h"
#include "edge.h"
#include "frame.h"
#include "nofile.h"
#include "tern_limits.h"

struct edge_proc {
	uv_loop_t loop;
	uv_signal_t sigterm, sigint;
	struct tern_config cfg;
	struct backend_link *bl;
	struct edge *edge;
	struct nofile nofile; /* open files limit, logged once started */
};

/* Appends what a FILE* writer produced to a metrics buffer. */
void metrics_from_file(struct fbuf *b, void (*write)(void *arg, FILE *out), void *arg)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	if (!f) {
		b->failed = 1;
		return;
	}
	write(arg, f);
	if (fclose(f) != 0)
		b->failed = 1;
	else
		fbuf_put(b, text, len);
	free(text);
}

static void link_metrics(void *arg, FILE *out) { backend_link_metrics(arg, out); }

static void metrics_extra(void *arg, struct fbuf *b)
{
	struct edge_proc *p = arg;
	metrics_from_file(b, link_metrics, p->bl);
}

static void on_links_closed(void *arg)
{
	(void)arg;
	fprintf(stderr, "tern: stopped\n");
}

static void on_edge_stopped(void *arg)
{
	struct edge_proc *p = arg;
	backend_link_close(p->bl, on_links_closed, p);
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct edge_proc *p = h->data;
	fprintf(stderr, "tern: %s received, draining\n", signum == SIGTERM ? "SIGTERM" : "SIGINT");
	uv_close((uv_handle_t *)&p->sigterm, NULL);
	uv_close((uv_handle_t *)&p->sigint, NULL);
	backend_link_release_pulls(p->bl); /* long-polls get their (empty) answer */
	edge_shutdown(p->edge, on_edge_stopped, p);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: tern edge --region R --listen HOST:PORT --nodes HOST:PORT,... "
		   "[--links K] [--id ID] [--config FILE]\n");
}

int tern_edge_main(int argc, char **argv)
{
	static const struct arg_flag flags[] = {
		{"listen", "listen"}, {"nodes", "nodes"}, {"links", "links"},
		{"region", "region"}, {"id", "node_id"}, {NULL, NULL},
	};
	struct edge_proc *p = calloc(1, sizeof(*p));
	char why[512];
	if (!p)
		return 1;
	int rc = args_parse("edge", argc, argv, flags, &p->cfg, usage);
	if (rc == 0 && !p->cfg.nodes[0]) {
		fprintf(stderr, "tern: edge needs --nodes HOST:PORT,... (the nodes it links to)\n");
		rc = 2;
	}
	if (rc != 0) {
		free(p);
		return rc < 0 ? 0 : rc;
	}
	if (!p->cfg.node_id[0]) {
		char host[40] = "edge";
		gethostname(host, sizeof(host) - 1);
		host[strcspn(host, ".")] = 0;
		snprintf(p->cfg.node_id, sizeof(p->cfg.node_id), "edge-%s-%d", host, (int)getpid());
	}
	signal(SIGPIPE, SIG_IGN);
	lws_set_log_level(LLL_ERR, NULL);
	nofile_raise(&p->nofile);
	uv_loop_init(&p->loop);
	p->bl = backend_link_new(&p->loop, &p->cfg, stderr, why, sizeof(why));
	if (!p->bl) {
		fprintf(stderr, "tern: %s\n", why);
		rc = 2;
		goto out;
	}
	struct edge_config ec = {
		.loop = &p->loop, .cfg = &p->cfg, .be_ops = &backend_link_ops, .be = p->bl,
		.metrics_extra = metrics_extra, .metrics_arg = p,
	};
	if (edge_start(&p->edge, &ec, why, sizeof(why)) != 0) {
		fprintf(stderr, "tern: %s\n", why);
		backend_link_close(p->bl, NULL, NULL);
		rc = 1;
		goto out;
	}
	uv_signal_init(&p->loop, &p->sigterm);
	uv_signal_init(&p->loop, &p->sigint);
	p->sigterm.data = p->sigint.data = p;
	uv_signal_start(&p->sigterm, on_signal, SIGTERM);
	uv_signal_start(&p->sigint, on_signal, SIGINT);
	fprintf(stderr,
		"tern %s edge %s region %s: listening on http://%s (WebSocket ws://%s/v1/ws), "
		"nodes %s, %llu data links + 1 control link each; auth is off (no keys configured)\n",
		TERN_VERSION, p->cfg.node_id, p->cfg.region, p->cfg.listen, p->cfg.listen,
		p->cfg.nodes, (unsigned long long)p->cfg.links);
	nofile_log(&p->nofile, (uint64_t)TERN_EDGE_CLIENTS_TARGET + TERN_NOFILE_RESERVE, stderr);
	uv_run(&p->loop, UV_RUN_DEFAULT);
	edge_free(p->edge);
out:
	uv_run(&p->loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&p->loop) != 0) {
		fprintf(stderr, "tern: loop closed with handles open\n");
		rc = rc ? rc : 1;
	}
	free(p);
	return rc;
}
