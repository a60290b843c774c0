/* Private to edge/: the structures behind edge.h and how its files share them. */
#ifndef TERN_EDGE_INTERNAL_H
#define TERN_EDGE_INTERNAL_H

#include <libwebsockets.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "backend.h"
#include "config.h"
#include "edge.h"
#include "frame.h"
#include "hmap.h"
#include "list.h"
#include "wire.h"

struct edge_stats {
	uint64_t connections;	   /* WebSocket sessions open now */
	uint64_t connections_total;
	uint64_t subscriptions;	   /* session subscriptions now */
	uint64_t messages_in;	   /* publishes acknowledged to clients */
	uint64_t messages_out;	   /* message frames written to clients */
	uint64_t bytes_out;	   /* WebSocket payload bytes written */
	uint64_t slow_closes;	   /* sessions closed with 4008 */
	uint64_t protocol_errors;  /* error frames sent */
	uint64_t http_requests;
	uint64_t upstream_subs;	   /* channels with an upstream subscription */
	uint64_t client_writes;	   /* writes to WebSocket clients (each carries 1+ frames) */
	uint64_t flush_lingers;	   /* flushes that waited flush_linger_ms (edge behind) */
};

struct edge {
	uv_loop_t *loop;
	const struct tern_config *cfg;
	const struct backend_ops *be_ops;
	void *be;
	struct lws_context *ctx;
	struct hmap chans;	/* struct edge_chan by name */
	struct list sessions;	/* struct session */
	uv_timer_t tick;
	struct frame *hb_frame; /* {"op":"heartbeat"}, shared */
	struct list dirty;	/* sessions with frames queued this loop turn */
	uv_check_t flush;	/* writes them after the loop's I/O phase */
	uv_timer_t linger;	/* ... or flush_linger_ms later, while lingering */
	bool lingering;		/* the last flush found sessions behind (see session.c) */
	uint64_t dirty_since_ns; /* uv_hrtime() when the first dirty session was queued */
	size_t handles_open;	 /* edge_free: tick, flush, linger, more not yet closed */
	uv_idle_t more;		/* active while dirty sessions are left for the next
				 * turn: keeps that turn's poll from blocking */
	uint64_t conn_counter;
	char conn_prefix[20];
	bool shutting_down;
	uint64_t shutdown_started_ms;
	void (*shutdown_done)(void *arg);
	void *shutdown_arg;
	bool destroyed;
	uint32_t http_owed; /* HTTP requests whose reply is not written yet */
	void (*metrics_extra)(void *arg, struct fbuf *out);
	void *metrics_arg;
	struct edge_stats st;
	/* The client port (listen.c): listen_fd is -1 once closed. */
	int listen_fd;
	uv_poll_t listen_poll;
	uv_timer_t listen_pause;
	struct lws_vhost *listen_vhost; /* where accepted sockets go */
};

/* listen.c: the client port; accepted sockets go to lws. open binds (with
 * SO_REUSEPORT for tern edge --workers; why says what failed), start takes
 * connections once e->ctx exists, close closes the socket (a drain, or
 * edge_free; the handles are closed by edge_free). */
int edge_listen_open(struct edge *e, const char *host, int port, bool reuseport, char *why,
		     size_t why_len);
void edge_listen_start(struct edge *e);
void edge_listen_close(struct edge *e);

/* One channel that local sessions subscribe to: one upstream subscription
 * however many sessions share it. */
struct edge_chan {
	struct hmap_node node;
	struct edge *e;
	struct backend_sub *up;
	bool ready;	   /* upstream answered; last_seq is valid */
	uint64_t last_seq; /* newest seq seen from upstream */
	struct list subs;  /* struct esub */
	uint32_t nsubs;
	char name[];
};

enum esub_state {
	ES_WAIT_UPSTREAM, /* the channel's upstream subscription is not ready */
	ES_CATCHUP,	  /* sending history up to boundary; live frames held */
	ES_LIVE,
};

struct hist_req;

struct esub {
	struct list chan_link;
	struct list sess_link;
	struct session *s;
	struct edge_chan *ec;
	enum esub_state state;
	bool has_ref;
	uint64_t ref;
	bool want_rewind, want_from;
	uint64_t rewind, from_seq;
	uint64_t hist_after; /* next history page starts after this seq */
	uint64_t boundary;   /* history runs up to here; live after */
	struct hist_req *hist; /* read in flight */
	bool wait_drain;       /* next page waits for the outbound queue */
	struct frame **held;
	size_t nheld, capheld, held_bytes;
};

struct session {
	struct list link;
	struct list dirty_link; /* in edge->dirty */
	struct edge *e;
	struct lws *wsi;  /* NULL once lws closed it */
	uint32_t refs;	  /* the wsi's and each request in flight */
	int close_code;	  /* non-zero: closing after the queue drains */
	bool close_sent;  /* our close frame is out; waiting for the reply */
	/* outbound ring, and what every flush reads beside it (one cache line) */
	struct frame **q;
	size_t qhead, qlen, qcap, qbytes;
	uint32_t waiting_drain;
	uint64_t last_tx_ms;
	/* inbound reassembly */
	unsigned char *rx;
	size_t rxlen, rxcap;
	bool rx_paused;
	bool rx_discard;      /* dropping the rest of an oversized message */
	uint64_t rx_discarded;
	uint32_t inflight;
	struct list subs; /* struct esub */
	uint32_t nsubs;
	struct list consumers; /* struct sconsumer (qsession.c) */
	char id[40];
};

uint64_t edge_now_ms(const struct edge *e);

/* session.c */
int session_ws_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
			void *in, size_t len);
/* Queues f (taking a new reference) to s; closes s with 4008 at the bound. */
void session_send(struct session *s, struct frame *f);
void session_send_error(struct session *s, bool has_ref, uint64_t ref, int err, const char *why);
void session_send_ok(struct session *s, bool has_ref, uint64_t ref, const char *extra);
void session_put(struct session *s);
void session_close(struct session *s, int code);
void sessions_tick(struct edge *e);
/* Writes what dirty sessions have queued (the uv_check callback). */
void sessions_flush(struct edge *e);
/* Takes s off the dirty list (it is closing or gone). */
void session_undirty(struct session *s);

/* qsession.c */
int qsession_handle(struct session *s, const struct wire_req *req, const char **why);
/* Cancels every consumer of s (unacked deliveries go back to their queues). */
void qsession_drop(struct session *s);

/* chan.c */
int echan_subscribe(struct session *s, const struct wire_req *req, const char **why);
void echan_unsubscribe(struct session *s, const char *name, size_t len);
void echan_drop_session(struct session *s);
void echan_resume_drained(struct session *s);
void echan_drop_all(struct edge *e);

/* rest.c */
int rest_http_callback(struct lws *wsi, enum lws_callback_reasons reason, void *user,
		       void *in, size_t len);

/* static.c (generated) */
int static_lookup(const char *path, const unsigned char **data, size_t *len, const char **ctype);

/* edge.c */
void edge_metrics(struct edge *e, struct fbuf *out);

#endif
