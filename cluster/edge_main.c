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
#include "edge_workers.h"
#include "frame.h"
#include "nofile.h"
#include "tern_limits.h"

/* The open files limit, raised before anything listens and logged after the
 * start line. */
static struct nofile edge_nofile;

struct edge_proc {
	uv_loop_t loop;
	uv_signal_t sigterm, sigint;
	struct tern_config *cfg;
	struct backend_link *bl;
	struct edge *edge;
	int worker; /* index among cfg->workers, -1 when alone */
	bool draining;
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
	/* With workers, a scrape reaches one of them: say which. */
	edge_metric(b, "tern_edge_workers", "gauge",
		    "Worker processes of this edge (tern edge --workers)", p->cfg->workers);
	edge_metric(b, "tern_edge_worker_index", "gauge",
		    "Which worker (0-based) answered this scrape", p->worker < 0 ? 0 : (uint64_t)p->worker);
}

static void on_links_closed(void *arg)
{
	struct edge_proc *p = arg;
	if (p->worker < 0) {
		fprintf(stderr, "tern: stopped\n");
		return;
	}
	uv_close((uv_handle_t *)&p->sigterm, NULL);
	uv_close((uv_handle_t *)&p->sigint, NULL);
}

static void on_edge_stopped(void *arg)
{
	struct edge_proc *p = arg;
	backend_link_close(p->bl, on_links_closed, p);
}

static void on_signal(uv_signal_t *h, int signum)
{
	struct edge_proc *p = h->data;
	if (p->draining)
		return; /* a worker: the supervisor passed on what we were sent too */
	p->draining = true;
	if (p->worker < 0) {
		fprintf(stderr, "tern: %s received, draining\n",
			signum == SIGTERM ? "SIGTERM" : "SIGINT");
		/* A second signal ends a lone edge at once. */
		uv_close((uv_handle_t *)&p->sigterm, NULL);
		uv_close((uv_handle_t *)&p->sigint, NULL);
	}
	backend_link_release_pulls(p->bl); /* long-polls get their (empty) answer */
	edge_shutdown(p->edge, on_edge_stopped, p);
}

static void usage(FILE *f)
{
	fprintf(f, "usage: tern edge --region R --listen HOST:PORT --nodes HOST:PORT,... "
		   "[--links K] [--workers W] [--id ID] [--config FILE]\n");
}

/* The start line and the open files line, once per edge: by a lone edge, or
 * by the supervisor once every worker listens (pids: theirs). */
static void log_started(const struct tern_config *cfg, const char *pids)
{
	char with[TERN_EDGE_WORKERS_MAX * 12 + 64] = "";
	uint64_t procs = pids ? cfg->workers : 1;
	if (pids)
		snprintf(with, sizeof(with), " with %llu worker processes sharing the port (pids %s)",
			 (unsigned long long)procs, pids);
	fprintf(stderr,
		"tern %s edge %s region %s: listening on http://%s (WebSocket ws://%s/v1/ws)%s, "
		"nodes %s, %llu data links + 1 control link %s; auth is off (no keys configured)\n",
		TERN_VERSION, cfg->node_id[0] ? cfg->node_id : "edge", cfg->region, cfg->listen,
		cfg->listen, with, cfg->nodes, (unsigned long long)cfg->links,
		pids ? "per worker and node" : "each");
	nofile_log(&edge_nofile, (TERN_EDGE_CLIENTS_TARGET + procs - 1) / procs + TERN_NOFILE_RESERVE,
		   (unsigned)procs, stderr);
}

/* One edge process: alone (worker -1), or worker `worker` of cfg->workers. */
static int edge_run(struct tern_config *cfg, int worker, int ready_fd)
{
	struct edge_proc *p = calloc(1, sizeof(*p));
	char why[512];
	int rc = 0;
	if (!p)
		return 1;
	p->cfg = cfg;
	p->worker = worker;
	if (!cfg->node_id[0]) {
		char host[40] = "edge";
		gethostname(host, sizeof(host) - 1);
		host[strcspn(host, ".")] = 0;
		snprintf(cfg->node_id, sizeof(cfg->node_id), "edge-%s-%d", host, (int)getpid());
	} else if (worker >= 0) {
		/* Each worker is an edge of its own to the nodes. */
		size_t n = strlen(cfg->node_id);
		snprintf(cfg->node_id + n, sizeof(cfg->node_id) - n, "-w%d", worker);
	}
	if (args_loop_init(&p->loop) != 0) {
		free(p);
		return 1;
	}
	p->bl = backend_link_new(&p->loop, cfg, stderr, why, sizeof(why));
	if (!p->bl) {
		fprintf(stderr, "tern: %s\n", why);
		rc = 2;
		goto out;
	}
	struct edge_config ec = {
		.loop = &p->loop, .cfg = cfg, .be_ops = &backend_link_ops, .be = p->bl,
		.metrics_extra = metrics_extra, .metrics_arg = p, .listen_share = worker >= 0,
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
	if (worker >= 0) { /* blocked since the fork (edge_workers.h) */
		sigset_t m;
		sigemptyset(&m);
		sigaddset(&m, SIGTERM);
		sigaddset(&m, SIGINT);
		sigprocmask(SIG_UNBLOCK, &m, NULL);
	}
	if (worker < 0)
		log_started(cfg, NULL);
	if (ready_fd >= 0) {
		if (write(ready_fd, "1", 1) != 1)
			rc = 1;
		close(ready_fd);
		ready_fd = -1;
	}
	uv_run(&p->loop, UV_RUN_DEFAULT);
	edge_free(p->edge);
out:
	if (ready_fd >= 0)
		close(ready_fd);
	uv_run(&p->loop, UV_RUN_DEFAULT);
	if (uv_loop_close(&p->loop) != 0) {
		fprintf(stderr, "tern: loop closed with handles open\n");
		rc = rc ? rc : 1;
	}
	free(p);
	return rc;
}

static void workers_started(void *arg, const char *pids)
{
	log_started(arg, pids);
}

int tern_edge_main(int argc, char **argv)
{
	static const struct arg_flag flags[] = {
		{"listen", "listen"}, {"nodes", "nodes"}, {"links", "links"},
		{"region", "region"}, {"id", "node_id"}, {"workers", "workers"}, {NULL, NULL},
	};
	struct tern_config cfg;
	int rc = args_parse("edge", argc, argv, flags, &cfg, usage);
	if (rc == 0 && !cfg.nodes[0]) {
		fprintf(stderr, "tern: edge needs --nodes HOST:PORT,... (the nodes it links to)\n");
		rc = 2;
	}
	if (rc != 0)
		return rc < 0 ? 0 : rc;
	signal(SIGPIPE, SIG_IGN);
	lws_set_log_level(LLL_ERR, NULL);
	/* Before lws sizes its tables; workers inherit it. */
	nofile_raise(&edge_nofile);
	if (cfg.workers <= 1)
		return edge_run(&cfg, -1, -1);
	return edge_workers_run(&cfg, edge_run, workers_started, &cfg);
}
