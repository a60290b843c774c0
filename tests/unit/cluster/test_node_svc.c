/* node_svc in one process: a real broker on a temp dir, the node's services listening on
 * 127.0.0.1, an edge-side link dialed to it, every call over the real socket. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "broker.h"
#include "config.h"
#include "link.h"
#include "link_call.h"
#include "node_svc.h"
#include "tern/control.pb-c.h"
#include "tern/data.pb-c.h"

#include "tern_assert.h"

#define DATA (&tern__data__data_plane__descriptor)
#define CONTROL (&tern__control__control_plane__descriptor)
#define WAIT_MS 5000

struct fx {
	uv_loop_t loop;
	uv_async_t wake;
	uv_timer_t tick;
	char dir[64];
	struct tern_config cfg;
	struct broker *b;
	struct node_svc *svc;
	tern_link *cli;
	int cli_closed, drained, drain_started;
	int64_t clock_ms; /* added to the wall clock for the broker: tests age history */
};

static void on_wake(uv_async_t *a) { broker_poll(((struct fx *)a->data)->b); }
static void notify(void *arg) { uv_async_send(arg); }
static void on_tick(uv_timer_t *t)
{
	struct fx *f = t->data;
	broker_tick(f->b);
	broker_poll(f->b);
}
static void cli_close(tern_link *l, const link_status *st, void *ud)
{
	(void)l;
	(void)st;
	((struct fx *)ud)->cli_closed = 1;
}

static int64_t fx_clock(void *arg)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + ((struct fx *)arg)->clock_ms;
}

static void wait_for(struct fx *f, const int *flag)
{
	uint64_t end = uv_now(&f->loop) + WAIT_MS;
	while (!*flag) {
		ASSERT(uv_now(&f->loop) < end);
		uv_run(&f->loop, UV_RUN_ONCE);
	}
}

static void fx_init_hist(struct fx *f, uint32_t history_messages)
{
	memset(f, 0, sizeof(*f));
	ASSERT(uv_loop_init(&f->loop) == 0);
	uv_async_init(&f->loop, &f->wake, on_wake);
	f->wake.data = f;
	uv_timer_init(&f->loop, &f->tick);
	f->tick.data = f;
	uv_timer_start(&f->tick, on_tick, 50, 50);
	snprintf(f->dir, sizeof(f->dir), "/tmp/tern-node-svc-XXXXXX");
	ASSERT(mkdtemp(f->dir));
	config_defaults(&f->cfg);
	snprintf(f->cfg.node_id, sizeof(f->cfg.node_id), "n1");
	f->cfg.log_calls = TERN_LOG_CALLS_ERRORS;
	char why[256];
	struct broker_config bc = {.data_dir = f->dir, .max_message_bytes = 65536,
				   .history_messages = history_messages, .history_age_ms = 3600000,
				   .idem_window_ms = 60000, .notify = notify, .notify_arg = &f->wake,
				   .now_ms = fx_clock, .clock_arg = f};
	ASSERT(broker_open(&f->b, &bc, why, sizeof(why)) == 0);
	struct node_svc_config sc = {.loop = &f->loop, .broker = f->b, .cfg = &f->cfg,
				     .log = stderr};
	ASSERT(node_svc_new(&f->svc, &sc) == 0);
	ASSERT(node_svc_listen(f->svc, "127.0.0.1", 0) == 0);
	ASSERT(node_svc_port(f->svc) > 0);
	static link_config cc = {.node_id = "e1", .region = "local", .plane = LINK_PLANE_DATA,
				 .on_close = cli_close};
	cc.ud = f;
	ASSERT(link_dial(&f->loop, &cc, "127.0.0.1", node_svc_port(f->svc), &f->cli) == 0);
}

static void fx_init(struct fx *f) { fx_init_hist(f, 1000); }

static void on_drained(void *arg) { ((struct fx *)arg)->drained = 1; }

static void fx_done(struct fx *f)
{
	if (!f->cli_closed)
		link_close(f->cli, NULL);
	wait_for(f, &f->cli_closed);
	if (!f->drain_started)
		node_svc_drain(f->svc, 1000, on_drained, f);
	wait_for(f, &f->drained);
	ASSERT(node_svc_links(f->svc, LINK_PLANE_DATA) == 0);
	node_svc_free(f->svc);
	broker_close(f->b);
	uv_close((uv_handle_t *)&f->tick, NULL);
	uv_close((uv_handle_t *)&f->wake, NULL);
	uv_run(&f->loop, UV_RUN_DEFAULT);
	ASSERT(uv_loop_close(&f->loop) == 0);
	char cmd[128];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", f->dir);
	ASSERT(system(cmd) == 0);
}

/* ---- unary calls ---- */

struct ures {
	int done, code;
	int32_t err_code; /* the tern.data.Error in the detail, or 0 */
	ProtobufCMessage *resp; /* an owned copy */
};

static void unary_done(link_call *c, const link_status *st, const ProtobufCMessage *resp,
		       void *ud)
{
	(void)c;
	struct ures *r = ud;
	r->done = 1;
	r->code = st->code;
	if (st->detail_len) {
		Tern__Data__Error *e = tern__data__error__unpack(NULL, st->detail_len, st->detail);
		ASSERT(e);
		r->err_code = e->code;
		tern__data__error__free_unpacked(e, NULL);
	}
	if (resp) {
		size_t n = protobuf_c_message_get_packed_size(resp);
		uint8_t *buf = malloc(n + 1);
		protobuf_c_message_pack(resp, buf);
		r->resp = protobuf_c_message_unpack(resp->descriptor, NULL, n, buf);
		free(buf);
	}
}

static void call(struct fx *f, const ProtobufCServiceDescriptor *svc, const char *method,
		 const ProtobufCMessage *req, struct ures *r)
{
	memset(r, 0, sizeof(*r));
	ASSERT(link_unary(f->cli, svc, method, req, NULL, unary_done, r) == 0);
	wait_for(f, &r->done);
}

static void ures_free(struct ures *r)
{
	if (r->resp)
		protobuf_c_message_free_unpacked(r->resp, NULL);
	r->resp = NULL;
}

static uint64_t publish(struct fx *f, const char *chan, const char *data)
{
	Tern__Data__PublishRequest req = TERN__DATA__PUBLISH_REQUEST__INIT;
	Tern__Data__Message m = TERN__DATA__MESSAGE__INIT;
	Tern__Data__Message *mp = &m;
	req.channel = (char *)chan;
	req.messages = &mp;
	req.n_messages = 1;
	m.data.data = (uint8_t *)data;
	m.data.len = strlen(data);
	m.has_name = 1;
	m.name = "ev";
	struct ures r;
	call(f, DATA, "Publish", &req.base, &r);
	ASSERT(r.code == LINK_OK);
	Tern__Data__PublishResponse *resp = (void *)r.resp;
	ASSERT(resp->first_seq == resp->last_seq && resp->id[0]);
	uint64_t seq = resp->first_seq;
	ures_free(&r);
	return seq;
}

static void test_publish_history(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f);
	ASSERT(publish(&f, "chat:a", "1") == 1);
	ASSERT(publish(&f, "chat:a", "{\"x\":2}") == 2);
	ASSERT(publish(&f, "chat:a", "3") == 3);

	Tern__Data__HistoryRequest h = TERN__DATA__HISTORY_REQUEST__INIT;
	h.channel = "chat:a";
	h.after_seq = 1;
	h.limit = 10;
	struct ures r;
	call(&f, DATA, "History", &h.base, &r);
	ASSERT(r.code == LINK_OK);
	Tern__Data__HistoryResponse *hr = (void *)r.resp;
	ASSERT(hr->n_messages == 2 && !hr->more);
	ASSERT(hr->messages[0]->seq == 2 && hr->messages[1]->seq == 3);
	ASSERT(hr->messages[0]->data.len == 7 && memcmp(hr->messages[0]->data.data, "{\"x\":2}", 7) == 0);
	ASSERT(hr->messages[0]->has_name && strcmp(hr->messages[0]->name, "ev") == 0);
	ASSERT(strcmp(hr->messages[0]->channel, "chat:a") == 0 && hr->messages[0]->ts_ms > 0);
	ures_free(&r);
	h.limit = 1;
	call(&f, DATA, "History", &h.base, &r);
	ASSERT(r.code == LINK_OK && ((Tern__Data__HistoryResponse *)r.resp)->more);
	ures_free(&r);

	Tern__Data__ChannelInfoRequest ci = TERN__DATA__CHANNEL_INFO_REQUEST__INIT;
	ci.channel = "chat:a";
	call(&f, DATA, "ChannelInfo", &ci.base, &r);
	ASSERT(r.code == LINK_OK);
	Tern__Data__ChannelInfoResponse *cr = (void *)r.resp;
	ASSERT(cr->last_seq == 3 && strcmp(cr->owner_node, "n1") == 0);
	ures_free(&r);
	fx_done(&f);
}

static void test_bad_requests(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f);
	Tern__Data__PublishRequest req = TERN__DATA__PUBLISH_REQUEST__INIT;
	Tern__Data__Message m = TERN__DATA__MESSAGE__INIT;
	Tern__Data__Message *mp = &m;
	req.channel = "bad name";
	req.messages = &mp;
	req.n_messages = 1;
	m.data.data = (uint8_t *)"1";
	m.data.len = 1;
	struct ures r;
	call(&f, DATA, "Publish", &req.base, &r);
	ASSERT(r.code == LINK_INVALID_ARGUMENT && r.err_code == 40001);
	req.n_messages = 0;
	req.channel = "ok";
	call(&f, DATA, "Publish", &req.base, &r);
	ASSERT(r.code == LINK_INVALID_ARGUMENT && r.err_code == 40000);

	Tern__Data__EnqueueRequest e = TERN__DATA__ENQUEUE_REQUEST__INIT;
	e.queue = "$reserved";
	call(&f, DATA, "Enqueue", &e.base, &r);
	ASSERT(r.code == LINK_INVALID_ARGUMENT && r.err_code == 40001);

	Tern__Data__ChannelInfoRequest ci = TERN__DATA__CHANNEL_INFO_REQUEST__INIT;
	ci.channel = "";
	call(&f, DATA, "ChannelInfo", &ci.base, &r);
	ASSERT(r.code == LINK_INVALID_ARGUMENT && r.err_code == 40001);

	Tern__Control__HelloRequest hello = TERN__CONTROL__HELLO_REQUEST__INIT;
	hello.id = "e1";
	hello.region = "mars";
	call(&f, CONTROL, "Hello", &hello.base, &r);
	ASSERT(r.code == LINK_FAILED_PRECONDITION);
	hello.region = "local";
	call(&f, CONTROL, "Hello", &hello.base, &r);
	ASSERT(r.code == LINK_OK);
	ASSERT(strcmp(((Tern__Control__HelloResponse *)r.resp)->id, "n1") == 0);
	ures_free(&r);
	fx_done(&f);
}

/* ---- Subscribe ---- */

#define EV_MAX 64
struct sub_rec {
	int n, done, code;
	int kind[EV_MAX];
	uint64_t seq[EV_MAX];
	char chan[EV_MAX][32];
};

static void sub_msg(link_call *c, const ProtobufCMessage *m, void *ud)
{
	(void)c;
	struct sub_rec *s = ud;
	const Tern__Data__SubscribeEvent *ev = (const void *)m;
	ASSERT(s->n < EV_MAX);
	s->kind[s->n] = ev->kind;
	if (ev->kind == TERN__DATA__SUBSCRIBE_EVENT__KIND__KIND_MESSAGE) {
		s->seq[s->n] = ev->message->seq;
		snprintf(s->chan[s->n], 32, "%s", ev->message->channel);
	} else {
		s->seq[s->n] = ev->seq;
		snprintf(s->chan[s->n], 32, "%s", ev->channel);
	}
	s->n++;
}

static void sub_done(link_call *c, const link_status *st, void *ud)
{
	(void)c;
	struct sub_rec *s = ud;
	s->done = 1;
	s->code = st->code;
}

static const link_call_cbs sub_cbs = {.on_msg = sub_msg, .on_done = sub_done};

static void sub_add(link_call *c, const char *chan, uint64_t from_seq, int add)
{
	Tern__Data__SubscribeRequest req = TERN__DATA__SUBSCRIBE_REQUEST__INIT;
	Tern__Data__ChannelPosition p = TERN__DATA__CHANNEL_POSITION__INIT;
	Tern__Data__ChannelPosition *pp = &p;
	p.channel = (char *)chan;
	p.from_seq = from_seq;
	p.add = add;
	p.clients = 3;
	req.channels = &pp;
	req.n_channels = 1;
	ASSERT(link_call_send(c, &req.base) == 0);
}

static void wait_events(struct fx *f, struct sub_rec *s, int n)
{
	uint64_t end = uv_now(&f->loop) + WAIT_MS;
	while (s->n < n) {
		ASSERT(uv_now(&f->loop) < end && !s->done);
		uv_run(&f->loop, UV_RUN_ONCE);
	}
}

static void test_subscribe(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f);
	struct sub_rec s;
	memset(&s, 0, sizeof(s));
	link_call *c;
	ASSERT(link_call_start(f.cli, DATA, "Subscribe", NULL, &sub_cbs, &s, &c) == 0);
	sub_add(c, "live:1", 0, 1);
	wait_events(&f, &s, 1);
	ASSERT(s.kind[0] == TERN__DATA__SUBSCRIBE_EVENT__KIND__KIND_ATTACHED && s.seq[0] == 0);
	ASSERT(strcmp(s.chan[0], "live:1") == 0);
	publish(&f, "live:1", "1");
	wait_events(&f, &s, 2);
	ASSERT(s.kind[1] == TERN__DATA__SUBSCRIBE_EVENT__KIND__KIND_MESSAGE && s.seq[1] == 1);

	/* Catch-up: history from 2 up to the attach point, then live, with no gap. */
	for (int i = 0; i < 4; i++)
		publish(&f, "old:1", "1");
	sub_add(c, "old:1", 2, 1);
	wait_events(&f, &s, 6);
	ASSERT(s.kind[2] == TERN__DATA__SUBSCRIBE_EVENT__KIND__KIND_ATTACHED && s.seq[2] == 4);
	for (int i = 3; i < 6; i++)
		ASSERT(s.kind[i] == TERN__DATA__SUBSCRIBE_EVENT__KIND__KIND_MESSAGE &&
		       s.seq[i] == (uint64_t)i - 1 && strcmp(s.chan[i], "old:1") == 0);
	publish(&f, "old:1", "1");
	wait_events(&f, &s, 7);
	ASSERT(s.seq[6] == 5);

	/* A bad name is detached with its error; removing a channel is acknowledged by one
	 * DETACHED and stops its messages. */
	sub_add(c, "", 0, 1);
	wait_events(&f, &s, 8);
	ASSERT(s.kind[7] == TERN__DATA__SUBSCRIBE_EVENT__KIND__KIND_DETACHED);
	sub_add(c, "live:1", 0, 0);
	publish(&f, "live:1", "1");
	publish(&f, "old:1", "1");
	wait_events(&f, &s, 10);
	ASSERT(s.kind[8] == TERN__DATA__SUBSCRIBE_EVENT__KIND__KIND_DETACHED &&
	       strcmp(s.chan[8], "live:1") == 0);
	ASSERT(s.seq[9] == 6 && strcmp(s.chan[9], "old:1") == 0);

	Tern__Data__ChannelInfoRequest ci = TERN__DATA__CHANNEL_INFO_REQUEST__INIT;
	ci.channel = "old:1";
	struct ures r;
	call(&f, DATA, "ChannelInfo", &ci.base, &r);
	ASSERT(((Tern__Data__ChannelInfoResponse *)r.resp)->subscribers == 3);
	ures_free(&r);
	link_call_cancel(c);
	wait_for(&f, &s.done);
	ASSERT(s.n == 10);
	fx_done(&f);
}

/* ---- queues ---- */

struct cons_rec {
	int n, done, code;
	char id[8][64];
	uint32_t attempt[8];
};

static void cons_msg(link_call *c, const ProtobufCMessage *m, void *ud)
{
	(void)c;
	struct cons_rec *r = ud;
	const Tern__Data__Delivery *d = (const void *)m;
	ASSERT(r->n < 8);
	ASSERT(strcmp(d->queue, "jobs") == 0 && strcmp(d->message->channel, "jobs") == 0);
	snprintf(r->id[r->n], 64, "%s", d->id);
	r->attempt[r->n] = d->attempt;
	r->n++;
}

static void cons_done(link_call *c, const link_status *st, void *ud)
{
	(void)c;
	struct cons_rec *r = ud;
	r->done = 1;
	r->code = st->code;
}

static const link_call_cbs cons_cbs = {.on_msg = cons_msg, .on_done = cons_done};

static void test_queue(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f);
	Tern__Data__EnqueueRequest e = TERN__DATA__ENQUEUE_REQUEST__INIT;
	e.queue = "jobs";
	e.data.data = (uint8_t *)"{\"n\":1}";
	e.data.len = 7;
	struct ures r;
	call(&f, DATA, "Enqueue", &e.base, &r);
	ASSERT(r.code == LINK_OK && ((Tern__Data__EnqueueResponse *)r.resp)->id[0]);
	ures_free(&r);

	struct cons_rec cr;
	memset(&cr, 0, sizeof(cr));
	link_call *c;
	ASSERT(link_call_start(f.cli, DATA, "Consume", NULL, &cons_cbs, &cr, &c) == 0);
	Tern__Data__ConsumeRequest creq = TERN__DATA__CONSUME_REQUEST__INIT;
	creq.queue = "jobs";
	creq.prefetch = 5;
	ASSERT(link_call_send(c, &creq.base) == 0);
	uint64_t end = uv_now(&f.loop) + WAIT_MS;
	while (cr.n < 1) {
		ASSERT(uv_now(&f.loop) < end);
		uv_run(&f.loop, UV_RUN_ONCE);
	}
	ASSERT(cr.attempt[0] == 1);

	Tern__Data__QueueInfoRequest qi = TERN__DATA__QUEUE_INFO_REQUEST__INIT;
	qi.queue = "jobs";
	call(&f, DATA, "GetQueueInfo", &qi.base, &r);
	Tern__Data__QueueInfo *info = (void *)r.resp;
	ASSERT(r.code == LINK_OK && info->unacked == 1 && info->consumers == 1);
	ASSERT(strcmp(info->name, "jobs") == 0 && strcmp(info->dead_letter, "jobs.dlq") == 0);
	ures_free(&r);

	Tern__Data__SettleRequest s = TERN__DATA__SETTLE_REQUEST__INIT;
	char *ids[2] = {cr.id[0], "nope"};
	s.queue = "jobs";
	s.ids = ids;
	s.n_ids = 2;
	s.ack = 1;
	call(&f, DATA, "Settle", &s.base, &r);
	Tern__Data__SettleResponse *sr = (void *)r.resp;
	ASSERT(r.code == LINK_OK && sr->n_not_found == 1 && strcmp(sr->not_found[0], "nope") == 0);
	ures_free(&r);
	link_call_cancel(c);
	wait_for(&f, &cr.done);

	/* Pull: one enqueued message, then an empty wait. */
	call(&f, DATA, "Enqueue", &e.base, &r);
	ures_free(&r);
	Tern__Data__PullRequest p = TERN__DATA__PULL_REQUEST__INIT;
	p.queue = "jobs";
	p.max = 10;
	p.wait_ms = 100;
	call(&f, DATA, "Pull", &p.base, &r);
	ASSERT(r.code == LINK_OK && ((Tern__Data__PullResponse *)r.resp)->n_deliveries == 1);
	ures_free(&r);
	call(&f, DATA, "Pull", &p.base, &r);
	ASSERT(r.code == LINK_OK && ((Tern__Data__PullResponse *)r.resp)->n_deliveries == 0);
	ures_free(&r);

	Tern__Data__QueueConfig qc = TERN__DATA__QUEUE_CONFIG__INIT;
	qc.queue = "jobs";
	qc.has_max_attempts = 1;
	qc.max_attempts = 0; /* out of range */
	call(&f, DATA, "ConfigureQueue", &qc.base, &r);
	ASSERT(r.code == LINK_INVALID_ARGUMENT && r.err_code == 40000);
	qc.max_attempts = 3;
	call(&f, DATA, "ConfigureQueue", &qc.base, &r);
	ASSERT(r.code == LINK_OK);
	ures_free(&r);
	fx_done(&f);
}

static void on_swept(void *arg, int err)
{
	ASSERT(err == 0);
	*(int *)arg = 1;
}

/* from_seq below what history holds: GAP with the first seq held, then those messages. */
static void test_subscribe_gap(void **state)
{
	(void)state;
	struct fx f;
	fx_init_hist(&f, 2);
	for (int i = 0; i < 5; i++)
		publish(&f, "g:1", "1");
	int swept = 0;
	f.clock_ms += 3600000 + 1000; /* retention keeps 2 messages or an hour */
	ASSERT(broker_sweep(f.b, on_swept, &swept) == 0);
	wait_for(&f, &swept);
	struct sub_rec s;
	memset(&s, 0, sizeof(s));
	link_call *c;
	ASSERT(link_call_start(f.cli, DATA, "Subscribe", NULL, &sub_cbs, &s, &c) == 0);
	sub_add(c, "g:1", 1, 1);
	wait_events(&f, &s, 4);
	ASSERT(s.kind[0] == TERN__DATA__SUBSCRIBE_EVENT__KIND__KIND_ATTACHED && s.seq[0] == 5);
	ASSERT(s.kind[1] == TERN__DATA__SUBSCRIBE_EVENT__KIND__KIND_GAP && s.seq[1] == 4);
	ASSERT(s.kind[2] == TERN__DATA__SUBSCRIBE_EVENT__KIND__KIND_MESSAGE && s.seq[2] == 4);
	ASSERT(s.kind[3] == TERN__DATA__SUBSCRIBE_EVENT__KIND__KIND_MESSAGE && s.seq[3] == 5);
	link_call_cancel(c);
	wait_for(&f, &s.done);
	fx_done(&f);
}

struct hb_rec {
	int n, done, code, retryable;
	uint64_t seq, sent_us;
	char id[16];
};

static void hb_msg(link_call *c, const ProtobufCMessage *m, void *ud)
{
	(void)c;
	struct hb_rec *h = ud;
	const Tern__Control__Heartbeat *hb = (const void *)m;
	h->n++;
	h->seq = hb->seq;
	h->sent_us = hb->sent_us;
	snprintf(h->id, sizeof(h->id), "%s", hb->id);
}

static void hb_done(link_call *c, const link_status *st, void *ud)
{
	(void)c;
	struct hb_rec *h = ud;
	h->done = 1;
	h->code = st->code;
	h->retryable = st->retryable;
}

static const link_call_cbs hb_cbs = {.on_msg = hb_msg, .on_done = hb_done};

static void sub_done_retryable(link_call *c, const link_status *st, void *ud)
{
	sub_done(c, st, ud);
	ASSERT(st->retryable);
}

/* Drain ends the streams (UNAVAILABLE, retryable), the link goes, done runs well before the
 * grace. Heartbeats echo and Stats count on the way. */
static void test_drain(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f);
	struct hb_rec h;
	memset(&h, 0, sizeof(h));
	link_call *hc;
	ASSERT(link_call_start(f.cli, CONTROL, "Heartbeats", NULL, &hb_cbs, &h, &hc) == 0);
	Tern__Control__Heartbeat hb = TERN__CONTROL__HEARTBEAT__INIT;
	hb.id = "e1";
	hb.seq = 7;
	hb.sent_us = 12345;
	ASSERT(link_call_send(hc, &hb.base) == 0);
	wait_for(&f, &h.n);
	ASSERT(h.seq == 7 && h.sent_us == 12345 && strcmp(h.id, "n1") == 0);

	static const link_call_cbs cbs = {.on_msg = sub_msg, .on_done = sub_done_retryable};
	struct sub_rec s;
	memset(&s, 0, sizeof(s));
	link_call *c;
	ASSERT(link_call_start(f.cli, DATA, "Subscribe", NULL, &cbs, &s, &c) == 0);
	sub_add(c, "d:1", 0, 1);
	wait_events(&f, &s, 1);
	ASSERT(node_svc_links(f.svc, LINK_PLANE_DATA) == 1);

	Tern__Control__StatsRequest sr = TERN__CONTROL__STATS_REQUEST__INIT;
	struct ures r;
	call(&f, CONTROL, "Stats", &sr.base, &r);
	ASSERT(r.code == LINK_OK && ((Tern__Control__StatsResponse *)r.resp)->links == 1);
	ures_free(&r);

	uint64_t t0 = uv_now(&f.loop);
	f.drain_started = 1;
	node_svc_drain(f.svc, 5000, on_drained, &f);
	wait_for(&f, &s.done);
	ASSERT(s.code == LINK_UNAVAILABLE);
	wait_for(&f, &h.done);
	ASSERT(h.code == LINK_UNAVAILABLE && h.retryable);
	wait_for(&f, &f.drained);
	wait_for(&f, &f.cli_closed);
	ASSERT(uv_now(&f.loop) - t0 < 2000);
	fx_done(&f);
}

static void pull_done(link_call *c, const link_status *st, void *ud)
{
	(void)c;
	int *code = ud;
	*code = st->code + 100;
}

static const link_call_cbs pull_cbs = {.on_done = pull_done};

static void on_timer(uv_timer_t *t) { *(int *)t->data = 1; }

/* An edge that cancels a waiting Pull withdraws it: a later message is not taken by it. */
static void test_pull_cancel(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f);
	int code = 0, fired = 0;
	link_call *c;
	Tern__Data__PullRequest p = TERN__DATA__PULL_REQUEST__INIT;
	p.queue = "work";
	p.max = 1;
	p.wait_ms = 10000;
	ASSERT(link_call_start(f.cli, DATA, "Pull", NULL, &pull_cbs, &code, &c) == 0);
	ASSERT(link_call_send(c, &p.base) == 0);
	ASSERT(link_call_close_send(c) == 0);
	uv_timer_t t;
	uv_timer_init(&f.loop, &t);
	t.data = &fired;
	uv_timer_start(&t, on_timer, 100, 0);
	wait_for(&f, &fired);
	link_call_cancel(c);
	wait_for(&f, &code);
	ASSERT(code == 100 + LINK_CANCELLED);
	fired = 0;
	uv_timer_start(&t, on_timer, 100, 0); /* the cancel reaches the node */
	wait_for(&f, &fired);
	uv_close((uv_handle_t *)&t, NULL);

	Tern__Data__EnqueueRequest e = TERN__DATA__ENQUEUE_REQUEST__INIT;
	e.queue = "work";
	e.data.data = (uint8_t *)"1";
	e.data.len = 1;
	struct ures r;
	call(&f, DATA, "Enqueue", &e.base, &r);
	ures_free(&r);
	p.wait_ms = 0;
	call(&f, DATA, "Pull", &p.base, &r);
	ASSERT(r.code == LINK_OK && ((Tern__Data__PullResponse *)r.resp)->n_deliveries == 1);
	ures_free(&r);
	fx_done(&f);
}

struct behind_rec {
	int done, code, retryable;
	char msg[128];
};

static void behind_done(link_call *c, const link_status *st, void *ud)
{
	(void)c;
	struct behind_rec *b = ud;
	b->done = 1;
	b->code = st->code;
	b->retryable = st->retryable;
	snprintf(b->msg, sizeof(b->msg), "%s", st->message ? st->message : "");
}

static void pub_counted(link_call *c, const link_status *st, const ProtobufCMessage *resp,
			void *ud)
{
	(void)c;
	(void)resp;
	ASSERT(st->code == LINK_OK);
	(*(int *)ud)++;
}

/* An edge that stops reading its Subscribe stream gets it ended, retryable, once the node's
 * send queue for it is full: the node never buffers without bound. */
static void test_subscribe_behind(void **state)
{
	(void)state;
	struct fx f;
	fx_init(&f);
	static const link_call_cbs cbs = {.on_done = behind_done};
	struct behind_rec b;
	memset(&b, 0, sizeof(b));
	link_call *c;
	ASSERT(link_call_start(f.cli, DATA, "Subscribe", NULL, &cbs, &b, &c) == 0);
	sub_add(c, "flood", 0, 1);
	link_call_pause(c, 1);
	static char data[60000];
	memset(data, '7', sizeof(data));
	Tern__Data__PublishRequest req = TERN__DATA__PUBLISH_REQUEST__INIT;
	Tern__Data__Message m = TERN__DATA__MESSAGE__INIT;
	Tern__Data__Message *mp = &m;
	req.channel = "flood";
	req.messages = &mp;
	req.n_messages = 1;
	m.data.data = (uint8_t *)data;
	m.data.len = sizeof(data);
	int published = 0;
	/* 8 MiB send queue + 1 MiB stream window: 200 x 60 kB is well past both. */
	for (int i = 0; i < 200; i++) {
		ASSERT(link_unary(f.cli, DATA, "Publish", &req.base, NULL, pub_counted, &published) == 0);
		if (i % 50 == 49)
			while (published <= i - 10)
				uv_run(&f.loop, UV_RUN_ONCE);
	}
	uint64_t end = uv_now(&f.loop) + WAIT_MS;
	while (published < 200 || !b.done) {
		ASSERT(uv_now(&f.loop) < end);
		uv_run(&f.loop, UV_RUN_ONCE);
		if (published == 200 && !b.done)
			link_call_pause(c, 0); /* read what was queued, then the status */
	}
	ASSERT(b.code == LINK_UNAVAILABLE && b.retryable);
	ASSERT(strcmp(b.msg, "subscription stream behind") == 0);
	fx_done(&f);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_publish_history),
		cmocka_unit_test(test_bad_requests),
		cmocka_unit_test(test_subscribe),
		cmocka_unit_test(test_queue),
		cmocka_unit_test(test_subscribe_gap),
		cmocka_unit_test(test_drain),
		cmocka_unit_test(test_pull_cancel),
		cmocka_unit_test(test_subscribe_behind),
	};
	if (argc > 1)
		cmocka_set_test_filter(argv[1]);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
