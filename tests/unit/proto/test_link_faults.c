/* Links under failure, over real loopback sockets: a silent peer, an abrupt close, redial with
 * backoff, goaway during traffic (no call lost or run twice), hostile bytes of every kind, TLS
 * refusals. Each ends with a clean error, and the process keeps serving. */
#include <errno.h>
#include <string.h>

#include "helpers.h"

static int g_tls; /* set by the group runner */

static uint64_t now_ms(void) { return uv_hrtime() / 1000000u; }

static Tern__Link__Echo echo(uint64_t id, uint32_t delay) {
  Tern__Link__Echo e = TERN__LINK__ECHO__INIT;
  e.id = id;
  e.delay_ms = delay;
  return e;
}

/* ---- a raw server: answers the preface and settings, then says nothing, ever ---- */

typedef struct rawsrv {
  uv_tcp_t tcp, conn;
  int accepted, conn_open, close_after_hello;
  uint8_t sink[65536];
  uv_write_t w;
  uint8_t hello[128];
  size_t hello_len;
} rawsrv;

static void rs_alloc(uv_handle_t *h, size_t s, uv_buf_t *b) {
  rawsrv *r = h->data;
  *b = uv_buf_init((char *)r->sink, sizeof(r->sink));
}
static void rs_conn_closed(uv_handle_t *h) { ((rawsrv *)h->data)->conn_open = 0; }
static void rs_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  if (n < 0) uv_close((uv_handle_t *)s, rs_conn_closed);
}
static void rs_written(uv_write_t *w, int status) {
  rawsrv *r = w->data;
  if (r->close_after_hello && !uv_is_closing((uv_handle_t *)&r->conn))
    uv_close((uv_handle_t *)&r->conn, rs_conn_closed);
}
static void rs_accept(uv_stream_t *s, int status) {
  rawsrv *r = s->data;
  if (status < 0 || r->accepted) return;
  uv_tcp_init(s->loop, &r->conn);
  r->conn.data = r;
  ASSERT(uv_accept(s, (uv_stream_t *)&r->conn) == 0);
  r->accepted = r->conn_open = 1;
  uv_read_start((uv_stream_t *)&r->conn, rs_alloc, rs_read);
  uv_buf_t b = uv_buf_init((char *)r->hello, (unsigned)r->hello_len);
  r->w.data = r;
  uv_write(&r->w, (uv_stream_t *)&r->conn, &b, 1, rs_written);
}

static int rawsrv_start(fx *f, rawsrv *r) {
  memset(r, 0, sizeof(*r));
  rawpeer tmp = {0};
  raw_put_hello(&tmp);
  memcpy(r->hello, tmp.out, tmp.outlen);
  r->hello_len = tmp.outlen;
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", 0, &a);
  uv_tcp_init(&f->loop, &r->tcp);
  r->tcp.data = r;
  ASSERT(uv_tcp_bind(&r->tcp, (const struct sockaddr *)&a, 0) == 0);
  ASSERT(uv_listen((uv_stream_t *)&r->tcp, 8, rs_accept) == 0);
  struct sockaddr_in b;
  int len = sizeof(b);
  uv_tcp_getsockname(&r->tcp, (struct sockaddr *)&b, &len);
  return ntohs(b.sin_port);
}

static void rawsrv_close(rawsrv *r) {
  uv_close((uv_handle_t *)&r->tcp, NULL);
  if (r->conn_open && !uv_is_closing((uv_handle_t *)&r->conn))
    uv_close((uv_handle_t *)&r->conn, rs_conn_closed);
}

static void silent_peer(void **state) {
  fx f;
  fx_init(&f, 0);
  rawsrv rs;
  int port = rawsrv_start(&f, &rs);
  f.ccfg.ping_interval_ms = 50;
  f.ccfg.dead_after = 3;
  ASSERT(link_dial(&f.loop, &f.ccfg, "127.0.0.1", port, &f.cli) == 0);
  ASSERT(fx_run_until(&f, &f.cli_ready, 2000));
  uint64_t t0 = now_ms();
  cstate cs = {0};
  Tern__Link__Echo req = echo(1, 0);
  ASSERT(link_unary(f.cli, DIAG, "Unary", &req.base, NULL, cstate_unary_done, &cs) == 0);
  ASSERT(fx_run_until(&f, &f.cli_closed, 2000));
  uint64_t ms = now_ms() - t0;
  fprintf(stderr, "silent peer declared dead after %llu ms (3 x 50 ms)\n", (unsigned long long)ms);
  ASSERT(ms >= 140 && ms <= 1500);
  ASSERT(f.cli_close_st.code == LINK_UNAVAILABLE && f.cli_close_st.retryable);
  ASSERT(strstr(f.cli_close_msg, "silent"));
  ASSERT(cs.done && cs.code == LINK_UNAVAILABLE && cs.retryable);
  rawsrv_close(&rs);
  fx_finish(&f);
}

/* A peer whose process wedges: its socket stays open, nothing is read or written any more. */
static void frozen_peer(void **state) {
  fx f;
  fx_init(&f, g_tls);
  f.ccfg.ping_interval_ms = 50;
  f.ccfg.dead_after = 4;
  fx_start(&f);
  cstate cs = {0};
  Tern__Link__Echo req = echo(1, 1);
  ASSERT(link_unary(f.cli, DIAG, "Unary", &req.base, NULL, cstate_unary_done, &cs) == 0);
  ASSERT(fx_run_until_u64(&f, &f.d.unary, 1, 2000));
  test_link_freeze(f.srv);
  uint64_t t0 = now_ms();
  ASSERT(fx_run_until(&f, &f.cli_closed, 3000));
  uint64_t ms = now_ms() - t0;
  fprintf(stderr, "frozen peer (%s) declared dead after %llu ms (4 x 50 ms)\n",
          g_tls ? "tls" : "tcp", (unsigned long long)ms);
  ASSERT(ms >= 100 && ms <= 1500);
  ASSERT(f.cli_close_st.code == LINK_UNAVAILABLE && f.cli_close_st.retryable);
  ASSERT(cs.done && cs.code == LINK_UNAVAILABLE && cs.retryable);
  link_close(f.srv, NULL);
  fx_finish(&f);
}

static void abrupt_close(void **state) {
  fx f;
  fx_init(&f, g_tls);
  fx_start(&f);
  cstate cs = {0};
  Tern__Link__Echo req = echo(1, 1);
  ASSERT(link_unary(f.cli, DIAG, "Unary", &req.base, NULL, cstate_unary_done, &cs) == 0);
  ASSERT(fx_run_until_u64(&f, &f.d.unary, 1, 2000));
  link_close(f.srv, NULL); /* no goaway: the socket just goes */
  ASSERT(fx_run_until(&f, &cs.done, 2000));
  ASSERT(cs.code == LINK_UNAVAILABLE && cs.retryable);
  ASSERT(fx_run_until(&f, &f.cli_closed, 2000));
  ASSERT(f.d.done_other == 1); /* the handler heard of it too */
  if (g_tls) {
    fx_finish(&f);
    return;
  }
  /* a raw peer that hangs up right after its hello */
  rawsrv rs;
  int port = rawsrv_start(&f, &rs);
  rs.close_after_hello = 1;
  f.cli_closed = 0;
  ASSERT(link_dial(&f.loop, &f.ccfg, "127.0.0.1", port, &f.cli) == 0);
  ASSERT(fx_run_until(&f, &f.cli_closed, 2000));
  ASSERT(f.cli_close_st.code == LINK_UNAVAILABLE && f.cli_close_st.retryable);
  rawsrv_close(&rs);
  fx_finish(&f);
}

/* A goaway naming the last stream the peer will process: calls above it fail at once, retryable
 * (they were never processed), the ones below go on, and no new call starts on the link. */
static int g_goaways;
static void on_goaway_cb(tern_link *l, const link_status *st, void *ud) { g_goaways++; }

static void goaway_last_id(void **state) {
  fx f;
  fx_init(&f, 0);
  rawsrv rs;
  int port = rawsrv_start(&f, &rs);
  uint8_t fr[64];
  size_t n = link_frame_put_goaway(fr, 1, 0, "drain", 5);
  memcpy(rs.hello + rs.hello_len, fr, n);
  rs.hello_len += n;
  g_goaways = 0;
  f.ccfg.on_goaway = on_goaway_cb;
  ASSERT(link_dial(&f.loop, &f.ccfg, "127.0.0.1", port, &f.cli) == 0);
  cstate cs[3];
  memset(cs, 0, sizeof(cs));
  Tern__Link__Echo req = echo(1, 0);
  for (int i = 0; i < 3; i++) /* stream ids 1, 3, 5 */
    ASSERT(link_unary(f.cli, DIAG, "Unary", &req.base, NULL, cstate_unary_done, &cs[i]) == 0);
  ASSERT(fx_run_until(&f, &cs[2].done, 2000) && fx_run_until(&f, &cs[1].done, 2000));
  for (int i = 1; i < 3; i++) {
    ASSERT(cs[i].code == LINK_UNAVAILABLE && cs[i].retryable);
    ASSERT(strstr(cs[i].msg, "not processed"));
  }
  ASSERT(!cs[0].done && g_goaways == 1 && !link_is_usable(f.cli));
  ASSERT(link_unary(f.cli, DIAG, "Unary", &req.base, NULL, cstate_unary_done, &cs[1]) ==
         -ESHUTDOWN);
  link_close(f.cli, NULL);
  ASSERT(fx_run_until(&f, &cs[0].done, 2000) && cs[0].retryable);
  rawsrv_close(&rs);
  fx_finish(&f);
}

/* ---- redial ---- */

typedef struct dstate {
  int up, downs;
  uint32_t delays[64];
  tern_link *l;
} dstate;

static void d_up(link_dialer *d, tern_link *l, void *ud) {
  dstate *s = ud;
  s->up++;
  s->l = l;
}
static void d_down(link_dialer *d, const link_status *st, uint32_t delay_ms, void *ud) {
  dstate *s = ud;
  ASSERT(st->retryable);
  if (s->downs < 64) s->delays[s->downs] = delay_ms;
  s->downs++;
}

static void on_closed_flag(void *ud) { *(int *)ud = 1; }

static void redial(void **state) {
  fx f;
  fx_init(&f, g_tls);
  /* find a free port, then leave it closed */
  fx_listen(&f, 0);
  int port = f.port;
  int lc = 0;
  link_listener_close(f.lst, on_closed_flag, &lc);
  f.lst = NULL;
  ASSERT(fx_run_until(&f, &lc, 2000));
  dstate ds = {0};
  link_dialer_opts o = {.backoff_base_ms = 10, .backoff_max_ms = 80, .on_up = d_up,
                        .on_down = d_down, .ud = &ds};
  link_dialer *d;
  f.ccfg.on_close = NULL;
  f.ccfg.on_ready = NULL;
  ASSERT(link_dialer_start(&f.loop, &f.ccfg, "127.0.0.1", port, &o, &d) == 0);
  fx_run_ms(&f, 400);
  ASSERT(!ds.up && link_dialer_link(d) == NULL);
  uint32_t attempts = link_dialer_attempts(d);
  fprintf(stderr, "redial: %u attempts in 400 ms, delays", attempts);
  for (int i = 0; i < ds.downs && i < 10; i++) fprintf(stderr, " %u", ds.delays[i]);
  fprintf(stderr, "\n");
  /* 10, 20, 40, 80, 80... jittered into [d/2, d]: about 8 attempts in 400 ms, 40 at most
   * (the lower bound leaves room for a loaded machine) */
  ASSERT(attempts >= 3 && attempts <= 40);
  for (int i = 0; i < ds.downs && i < 64; i++) {
    uint32_t cap = 10u << (i < 3 ? i : 3);
    ASSERT(ds.delays[i] >= cap / 2 && ds.delays[i] <= cap);
  }
  /* the server comes up on that port: the dialer gets there */
  fx_listen(&f, port);
  ASSERT(fx_run_until(&f, &ds.up, 3000));
  ASSERT(link_dialer_link(d) == ds.l);
  cstate cs = {0};
  Tern__Link__Echo req = echo(5, 0);
  ASSERT(link_unary(link_dialer_link(d), DIAG, "Unary", &req.base, NULL, cstate_unary_done,
                    &cs) == 0);
  ASSERT(fx_run_until(&f, &cs.done, 2000) && cs.code == LINK_OK);
  /* the link dies: the dialer redials at once (the link was healthy) */
  int downs = ds.downs;
  link_close(f.srv, NULL);
  ds.up = 0;
  ASSERT(fx_run_until(&f, &ds.up, 3000));
  ASSERT(ds.downs == downs + 1 && ds.delays[downs] <= 10);
  int dc = 0;
  link_dialer_stop(d, on_closed_flag, &dc);
  ASSERT(fx_run_until(&f, &dc, 2000));
  fx_finish(&f);
}

/* ---- goaway during traffic: every call runs exactly once ---- */

#define GA_CALLS 3000
#define GA_CONC 64

typedef struct ga ga;
typedef struct ga_slot {
  ga *g;
  uint32_t id;
} ga_slot;

struct ga {
  link_dialer *d;
  ga_slot slots[GA_CALLS];
  uint32_t queue[GA_CALLS];
  size_t qhead, qtail; /* ring of ids still to send */
  int inflight, ok, retried;
};

static void ga_done(link_call *c, const link_status *st, const ProtobufCMessage *resp, void *ud) {
  ga_slot *s = ud;
  ga *g = s->g;
  g->inflight--;
  if (st->code == LINK_OK) {
    g->ok++;
    return;
  }
  /* only calls that were never processed may come back, and they say so */
  ASSERT(st->retryable && st->code == LINK_UNAVAILABLE);
  g->retried++;
  g->queue[g->qtail++ % GA_CALLS] = s->id;
}

static void ga_pump(ga *g) {
  tern_link *l;
  while (g->inflight < GA_CONC && g->qhead != g->qtail && (l = link_dialer_link(g->d))) {
    uint32_t id = g->queue[g->qhead % GA_CALLS];
    Tern__Link__Echo req = echo(id, 0);
    int rc = link_unary(l, DIAG, "Unary", &req.base, NULL, ga_done, &g->slots[id]);
    if (rc == -ESHUTDOWN || rc == -EAGAIN) return;
    ASSERT(rc == 0);
    g->qhead++;
    g->inflight++;
  }
}

static void goaway(void **state) {
  fx f;
  fx_init(&f, g_tls);
  f.d.executed_cap = GA_CALLS;
  f.d.executed = calloc(GA_CALLS, 1);
  fx_listen(&f, 0);
  static ga g;
  memset(&g, 0, sizeof(g));
  for (uint32_t i = 0; i < GA_CALLS; i++) {
    g.slots[i].g = &g;
    g.slots[i].id = i;
    g.queue[i] = i;
  }
  g.qtail = GA_CALLS;
  f.ccfg.on_close = NULL;
  f.ccfg.on_ready = NULL;
  link_dialer_opts o = {.backoff_base_ms = 5, .backoff_max_ms = 50};
  ASSERT(link_dialer_start(&f.loop, &f.ccfg, "127.0.0.1", f.port, &o, &g.d) == 0);
  f.scfg.on_close = NULL;
  tern_link *drained[2] = {NULL, NULL};
  int drains = 0;
  uint64_t end = now_ms() + 20000;
  while (g.ok < GA_CALLS && now_ms() < end) {
    uv_run(&f.loop, UV_RUN_ONCE);
    ga_pump(&g);
    if (drains < 2 && g.ok >= 1000 * (drains + 1) && f.srv && f.srv_ready &&
        (drains == 0 || f.srv != drained[0])) {
      drained[drains++] = f.srv;
      link_drain(f.srv);
    }
  }
  fprintf(stderr, "goaway: %d ok, %d retried, %d links accepted\n", g.ok, g.retried,
          f.srv_accepted);
  ASSERT(g.ok == GA_CALLS && g.inflight == 0);
  ASSERT(drains == 2 && f.srv_accepted >= 3);
  for (uint32_t i = 0; i < GA_CALLS; i++) ASSERT(f.d.executed[i] == 1);
  ASSERT(f.d.unary == GA_CALLS);
  int dc = 0;
  link_dialer_stop(g.d, on_closed_flag, &dc);
  ASSERT(fx_run_until(&f, &dc, 2000));
  fx_finish(&f);
}

/* ---- hostile bytes: each gets a clean error and the server keeps serving ---- */

static void hostile_run(fx *f, rawpeer *r, uint8_t expect_type, int expect_eof) {
  raw_start(f, r, f->port);
  uint64_t end = now_ms() + 3000;
  while (now_ms() < end && !(expect_eof ? r->eof : raw_saw_frame(r, expect_type)))
    uv_run(&f->loop, UV_RUN_ONCE);
  if (expect_eof) ASSERT(r->eof);
  if (expect_type != 0xff) ASSERT(raw_saw_frame(r, expect_type));
  raw_close(r);
  ASSERT(fx_run_until(f, &r->closed, 2000));
}

static size_t pack_header(uint8_t *buf, const char *method, int pause) {
  Tern__Link__CallHeader h = TERN__LINK__CALL_HEADER__INIT;
  Tern__Link__Metadata md = TERN__LINK__METADATA__INIT, *mdp = &md;
  h.method = (char *)method;
  if (pause) {
    md.key = "pause";
    h.n_metadata = 1;
    h.metadata = &mdp;
  }
  return tern__link__call_header__pack(&h, buf);
}

static void serves_still(fx *f) {
  int ready = f->cli_ready;
  ASSERT(link_dial(&f->loop, &f->ccfg, "127.0.0.1", f->port, &f->cli) == 0);
  int want = ready + 1;
  uint64_t end = now_ms() + 3000;
  while (f->cli_ready < want && now_ms() < end) uv_run(&f->loop, UV_RUN_ONCE);
  cstate cs = {0};
  Tern__Link__Echo req = echo(9, 0);
  ASSERT(link_unary(f->cli, DIAG, "Unary", &req.base, NULL, cstate_unary_done, &cs) == 0);
  ASSERT(fx_run_until(f, &cs.done, 3000) && cs.code == LINK_OK);
}

static void hostile_setup(fx *f) {
  fx_init(f, 0);
  f->scfg.stream_window = 64 * 1024;
  f->scfg.max_message = 16 * 1024;
  f->scfg.resets_per_s = 10;
  f->scfg.handshake_timeout_ms = 200;
  fx_listen(f, 0);
}

/* Input that ends the link: a goaway saying why, then the socket closes. */
static void hostile_link(void **state) {
  fx f;
  hostile_setup(&f);
  static rawpeer r;
  static uint8_t buf[70000];
  size_t n;

  /* HTTP instead of a link */
  memset(&r, 0, sizeof(r));
  raw_put(&r, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27);
  hostile_run(&f, &r, LINK_FRAME_GOAWAY, 1);
  /* a link of another version */
  memset(&r, 0, sizeof(r));
  raw_put(&r, "TERNLK\r\x02", 8);
  hostile_run(&f, &r, LINK_FRAME_GOAWAY, 1);
  /* garbage after a good hello */
  memset(&r, 0, sizeof(r));
  raw_put_hello(&r);
  for (int i = 0; i < 64; i++) buf[i] = (uint8_t)(i * 37 + 11);
  raw_put(&r, buf, 64);
  hostile_run(&f, &r, LINK_FRAME_GOAWAY, 1);
  /* an oversized length: refused from the header, nothing buffered */
  memset(&r, 0, sizeof(r));
  raw_put_hello(&r);
  link_frame_header_put(buf, 0x7ffffff0u, LINK_FRAME_DATA, 0, 1);
  raw_put(&r, buf, 12);
  hostile_run(&f, &r, LINK_FRAME_GOAWAY, 1);
  /* a frame for a stream never opened */
  memset(&r, 0, sizeof(r));
  raw_put_hello(&r);
  raw_put_frame(&r, LINK_FRAME_DATA, 0, 999, "abcd", 4);
  hostile_run(&f, &r, LINK_FRAME_GOAWAY, 1);
  /* a link window overflow */
  memset(&r, 0, sizeof(r));
  raw_put_hello(&r);
  link_frame_put_window(buf, 0, 0x7fffffffu);
  raw_put(&r, buf, 16);
  hostile_run(&f, &r, LINK_FRAME_GOAWAY, 1);
  /* settings that are not settings */
  memset(&r, 0, sizeof(r));
  raw_put(&r, LINK_PREFACE, 8);
  raw_put_frame(&r, LINK_FRAME_SETTINGS, 0, 0, "\xff\xff\xff", 3);
  hostile_run(&f, &r, LINK_FRAME_GOAWAY, 1);
  /* a ping flood: pongs queue beyond the cap, the link is closed */
  memset(&r, 0, sizeof(r));
  raw_put_hello(&r);
  for (int i = 0; i < 5000; i++) {
    link_frame_put_ping(buf, 0, (uint64_t)i);
    raw_put(&r, buf, 20);
  }
  hostile_run(&f, &r, LINK_FRAME_GOAWAY, 1);
  /* rapid reset: more resets per second than allowed */
  memset(&r, 0, sizeof(r));
  raw_put_hello(&r);
  n = pack_header(buf, "tern.link.LinkDiag/Unary", 0);
  raw_put_frame(&r, LINK_FRAME_HEADERS, 0, 1, buf, (uint32_t)n);
  for (int i = 0; i < 50; i++) {
    link_frame_put_reset(buf, 1, LINK_CANCELLED, 0);
    raw_put(&r, buf, 20);
  }
  hostile_run(&f, &r, LINK_FRAME_GOAWAY, 1);
  /* truncated: half a frame, then the peer stops sending */
  memset(&r, 0, sizeof(r));
  raw_put_hello(&r);
  link_frame_header_put(buf, 100, LINK_FRAME_DATA, 0, 1);
  raw_put(&r, buf, 7);
  r.shutdown_after_write = 1;
  hostile_run(&f, &r, 0xff, 1);
  /* silence: the handshake times out */
  memset(&r, 0, sizeof(r));
  hostile_run(&f, &r, 0xff, 1);

  serves_still(&f);
  fx_finish(&f);
}

/* Input that ends one stream: that stream is reset (or fails with a status), the link lives. */
static void hostile_stream(void **state) {
  fx f;
  hostile_setup(&f);
  static rawpeer r;
  static uint8_t buf[70000];
  size_t n;

  /* a stream window overflow, against a reader that never reads */
  memset(&r, 0, sizeof(r));
  raw_put_hello(&r);
  n = pack_header(buf, "tern.link.LinkDiag/ClientStream", 1);
  raw_put_frame(&r, LINK_FRAME_HEADERS, 0, 1, buf, (uint32_t)n);
  memset(buf, 0, sizeof(buf));
  for (int i = 0; i < 5; i++) raw_put_frame(&r, LINK_FRAME_DATA, 0, 1, buf, 16 * 1024);
  hostile_run(&f, &r, LINK_FRAME_RESET, 0);
  /* a message above max_message */
  memset(&r, 0, sizeof(r));
  raw_put_hello(&r);
  n = pack_header(buf, "tern.link.LinkDiag/ClientStream", 0);
  raw_put_frame(&r, LINK_FRAME_HEADERS, 0, 1, buf, (uint32_t)n);
  link_put_u32(buf, 1u << 20);
  raw_put_frame(&r, LINK_FRAME_DATA, 0, 1, buf, 8);
  hostile_run(&f, &r, LINK_FRAME_RESET, 0);
  /* a call header that does not decode */
  memset(&r, 0, sizeof(r));
  raw_put_hello(&r);
  raw_put_frame(&r, LINK_FRAME_HEADERS, 0, 1, "\x0a\xff\x01", 3);
  hostile_run(&f, &r, LINK_FRAME_STATUS, 0);
  /* a request that does not decode as the method's input */
  memset(&r, 0, sizeof(r));
  raw_put_hello(&r);
  n = pack_header(buf, "tern.link.LinkDiag/Unary", 0);
  raw_put_frame(&r, LINK_FRAME_HEADERS, 0, 1, buf, (uint32_t)n);
  link_put_u32(buf, 3);
  memcpy(buf + 4, "\x0a\xff\x01", 3);
  raw_put_frame(&r, LINK_FRAME_DATA, LINK_FLAG_END, 1, buf, 7);
  hostile_run(&f, &r, LINK_FRAME_STATUS, 0);

  serves_still(&f);
  fx_finish(&f);
}

/* A listener holds at most listener_max_links links; more connections are refused at once. */
static void listener_cap(void **state) {
  fx f;
  fx_init(&f, 0);
  f.scfg.listener_max_links = 2;
  fx_listen(&f, 0);
  tern_link *a, *b;
  ASSERT(link_dial(&f.loop, &f.ccfg, "127.0.0.1", f.port, &a) == 0);
  ASSERT(link_dial(&f.loop, &f.ccfg, "127.0.0.1", f.port, &b) == 0);
  uint64_t end = now_ms() + 3000;
  while ((f.cli_ready < 2 || link_listener_links(f.lst) < 2) && now_ms() < end)
    uv_run(&f.loop, UV_RUN_ONCE);
  ASSERT(f.cli_ready == 2 && link_listener_links(f.lst) == 2);
  ASSERT(link_dial(&f.loop, &f.ccfg, "127.0.0.1", f.port, &f.cli) == 0);
  ASSERT(fx_run_until(&f, &f.cli_closed, 3000));
  ASSERT(f.cli_ready == 2 && link_listener_refused(f.lst) == 1);
  link_close(a, NULL);
  link_close(b, NULL);
  fx_finish(&f);
}

/* A port already taken: link_listen fails with the error and leaves nothing behind (its
 * handle closes and the listener is freed: under ASan a wrong free() here aborted `tern dev`
 * started with too few descriptors). The loop then closes with no handle open. */
static void listen_on_a_busy_port(void **state) {
  fx f;
  fx_init(&f, 0);
  fx_listen(&f, 0);
  link_listener *second = NULL;
  int rc = link_listen(&f.loop, &f.scfg, "127.0.0.1", f.port, NULL, NULL, &second);
  ASSERT(rc == UV_EADDRINUSE);
  ASSERT(second == NULL);
  for (int i = 0; i < 10; i++) uv_run(&f.loop, UV_RUN_NOWAIT); /* the failed one closes */
  fx_finish(&f);
}

/* ---- TLS refusals ---- */

static void tls_refusals(void **state) {
  fx f;
  fx_init(&f, 1);
  fx_listen(&f, 0);
  /* a client without a certificate, against a server that requires one */
  char ca[256];
  snprintf(ca, sizeof(ca), "%s/ca.crt", f.certdir);
  link_tls_opts co = {.ca_file = ca};
  link_tls *nocert;
  ASSERT(link_tls_new(&co, &nocert) == 0);
  link_config c = f.ccfg;
  c.tls = nocert;
  ASSERT(link_dial(&f.loop, &c, "127.0.0.1", f.port, &f.cli) == 0);
  ASSERT(fx_run_until(&f, &f.cli_closed, 3000));
  ASSERT(!f.cli_ready);
  /* a server whose certificate does not carry the name we expect */
  f.cli_closed = 0;
  c = f.ccfg;
  c.server_name = "other.example";
  ASSERT(link_dial(&f.loop, &c, "127.0.0.1", f.port, &f.cli) == 0);
  ASSERT(fx_run_until(&f, &f.cli_closed, 3000));
  ASSERT(!f.cli_ready && f.cli_close_st.code == LINK_UNAUTHENTICATED);
  /* plain TCP to a TLS listener */
  f.cli_closed = 0;
  c = f.ccfg;
  c.tls = NULL;
  ASSERT(link_dial(&f.loop, &c, "127.0.0.1", f.port, &f.cli) == 0);
  ASSERT(fx_run_until(&f, &f.cli_closed, 3000));
  ASSERT(!f.cli_ready);
  /* bad files */
  link_tls_opts bad = {.server = 1, .cert_file = "/nonexistent", .key_file = "/nonexistent"};
  link_tls *t;
  ASSERT(link_tls_new(&bad, &t) == -EINVAL);
  /* and the right client still gets through */
  serves_still(&f);
  link_close(f.cli, NULL);
  ASSERT(fx_run_until(&f, &f.cli_closed, 3000));
  f.cli = NULL;
  fx_finish(&f);
  link_tls_free(nocert);
}

static int setup_tls(void **state) {
  g_tls = 1;
  return 0;
}

int main(void) {
  const struct CMUnitTest tls_tests[] = {
      cmocka_unit_test(frozen_peer),
      cmocka_unit_test(abrupt_close),
      cmocka_unit_test(redial),
      cmocka_unit_test(goaway),
  };
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(frozen_peer),
      cmocka_unit_test(goaway_last_id),
      cmocka_unit_test(silent_peer),
      cmocka_unit_test(abrupt_close),
      cmocka_unit_test(redial),
      cmocka_unit_test(goaway),
      cmocka_unit_test(hostile_link),
      cmocka_unit_test(hostile_stream),
      cmocka_unit_test(listener_cap),
      cmocka_unit_test(listen_on_a_busy_port),
      cmocka_unit_test(tls_refusals),
  };
  int rc = cmocka_run_group_tests_name("link faults over tcp", tests, NULL, NULL);
  rc |= cmocka_run_group_tests_name("link faults over tls", tls_tests, setup_tls, NULL);
  return rc;
}
