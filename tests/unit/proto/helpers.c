#include "helpers.h"
#include "link_internal.h" /* test_link_freeze only */

#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- LinkDiag handlers ---- */

typedef struct sstate {
  diag *d;
  uint32_t sent, count, n_in;
  uint64_t id, sum;
  ProtobufCBinaryData data;
  uint8_t buf[64];
} sstate;

static void unary_msg(link_call *c, const ProtobufCMessage *m, void *ud) {
  diag *d = ud;
  const Tern__Link__Echo *req = (const Tern__Link__Echo *)m;
  d->unary++;
  if (req->id < d->executed_cap) d->executed[req->id]++;
  size_t mdlen;
  const void *md = link_call_md(c, "x-test", &mdlen);
  if (md && mdlen < sizeof(d->md_seen)) {
    memcpy(d->md_seen, md, mdlen);
    d->md_seen[mdlen] = 0;
  }
  if (req->count == 2) { /* the nested callee records what it inherited */
    d->nested_remaining_us = link_call_remaining_us(c);
    snprintf(d->nested_trace, sizeof(d->nested_trace), "%s", link_call_trace_id(c));
  }
  if (req->count == 3) { /* a structured error */
    link_status st = {.code = LINK_NOT_FOUND, .message = "no such thing", .retryable = 0,
                      .detail = (const uint8_t *)"detail-bytes", .detail_len = 12};
    link_call_finish(c, &st);
    return;
  }
  if (req->delay_ms) { /* hang until the deadline or a cancel */
    d->hung = c;
    return;
  }
  Tern__Link__Echo resp = TERN__LINK__ECHO__INIT;
  resp.id = req->id;
  resp.data = req->data;
  link_call_reply(c, &resp.base);
}

static void nested_done(link_call *c, const link_status *st, const ProtobufCMessage *resp,
                        void *ud) {
  link_call *parent = ud;
  if (st->code == LINK_OK)
    link_call_reply(parent, resp);
  else
    link_call_fail(parent, st->code, st->message, st->retryable);
}

static void unary_msg_nest(link_call *c, const ProtobufCMessage *m, void *ud) {
  const Tern__Link__Echo *req = (const Tern__Link__Echo *)m;
  if (req->count != 1) {
    unary_msg(c, m, ud);
    return;
  }
  Tern__Link__Echo sub = TERN__LINK__ECHO__INIT;
  sub.id = req->id;
  sub.count = 2;
  link_call_opts o = {.parent = c};
  int rc = link_unary(link_call_link(c), DIAG, "Unary", &sub.base, &o, nested_done, c);
  if (rc < 0) link_call_fail(c, LINK_INTERNAL, "nested start failed", 0);
}

static void count_done(diag *d, const link_status *st) {
  if (st->code == LINK_OK)
    d->done_ok++;
  else if (st->code == LINK_CANCELLED)
    d->done_cancelled++;
  else if (st->code == LINK_DEADLINE_EXCEEDED)
    d->done_deadline++;
  else
    d->done_other++;
}

static void unary_done(link_call *c, const link_status *st, void *ud) {
  diag *d = ud;
  if (d->hung == c) d->hung = NULL;
  count_done(d, st);
}

static void cs_record(cstate *s, const link_status *st) {
  s->done = 1;
  s->detail_len = st->detail_len < sizeof(s->detail) ? st->detail_len : 0;
  if (s->detail_len) memcpy(s->detail, st->detail, s->detail_len);
  s->code = st->code;
  s->retryable = st->retryable;
  snprintf(s->msg, sizeof(s->msg), "%s", st->message ? st->message : "");
}

static void cstate_msg(link_call *c, const ProtobufCMessage *m, void *ud) {
  cstate *s = ud;
  const Tern__Link__Echo *e = (const Tern__Link__Echo *)m;
  s->msgs++;
  s->bytes += e->data.len;
  s->last_id = e->id;
  s->last_count = e->count;
}

static void cstate_done(link_call *c, const link_status *st, void *ud) { cs_record(ud, st); }

const link_call_cbs cstate_cbs = {.on_msg = cstate_msg, .on_done = cstate_done};

void cstate_unary_done(link_call *c, const link_status *st, const ProtobufCMessage *resp,
                       void *ud) {
  cstate *s = ud;
  if (resp) cstate_msg(c, resp, ud);
  cs_record(s, st);
}

static void ss_pump(link_call *c, sstate *s) {
  Tern__Link__Echo out = TERN__LINK__ECHO__INIT;
  out.data = s->data;
  while (s->sent < s->count) {
    out.id = s->sent;
    int rc = link_call_send(c, &out.base);
    if (rc == -EAGAIN) return; /* on_writable resumes */
    ASSERT(rc == 0);
    s->sent++;
  }
  link_status ok = {.code = LINK_OK};
  link_call_finish(c, &ok);
}

static void ss_msg(link_call *c, const ProtobufCMessage *m, void *ud) {
  const Tern__Link__Echo *req = (const Tern__Link__Echo *)m;
  sstate *s = link_call_ud(c);
  s->d->server_streams++;
  s->count = req->count;
  s->data.len = req->data.len < sizeof(s->buf) ? req->data.len : 0;
  if (req->delay_ms) { /* big messages of delay_ms bytes (stall tests) */
    s->data.len = req->delay_ms;
    s->data.data = calloc(1, req->delay_ms);
    ASSERT(s->data.data);
  } else {
    memcpy(s->buf, req->data.data, s->data.len);
    s->data.data = s->buf;
  }
  ss_pump(c, s);
}

static void ss_writable(link_call *c, void *ud) { ss_pump(c, ud); }

static void st_start(link_call *c, void *ud) {
  sstate *s = calloc(1, sizeof(*s));
  ASSERT(s);
  s->d = ud;
  link_call_set_ud(c, s);
  if (link_call_md(c, "pause", NULL)) link_call_pause(c, 1); /* a reader that never reads */
}

static void st_done(link_call *c, const link_status *st, void *ud) {
  sstate *s = ud;
  if (!s) return;
  count_done(s->d, st);
  if (s->data.data && s->data.data != s->buf) free(s->data.data);
  free(s);
}

static void cs_msg(link_call *c, const ProtobufCMessage *m, void *ud) {
  sstate *s = ud;
  s->n_in++;
  s->sum += ((const Tern__Link__Echo *)m)->id;
}

static void cs_half(link_call *c, void *ud) {
  sstate *s = ud;
  s->d->client_streams++;
  Tern__Link__Echo out = TERN__LINK__ECHO__INIT;
  out.count = s->n_in;
  out.id = s->sum;
  link_call_reply(c, &out.base);
}

static void bidi_msg(link_call *c, const ProtobufCMessage *m, void *ud) {
  int rc = link_call_send(c, m);
  ASSERT(rc == 0);
}

static void bidi_half(link_call *c, void *ud) {
  sstate *s = ud;
  s->d->bidis++;
  link_status ok = {.code = LINK_OK};
  link_call_finish(c, &ok);
}

static const link_call_cbs unary_cbs = {.on_msg = unary_msg_nest, .on_done = unary_done};
static const link_call_cbs ss_cbs = {
    .on_start = st_start, .on_msg = ss_msg, .on_writable = ss_writable, .on_done = st_done};
static const link_call_cbs cs_cbs = {
    .on_start = st_start, .on_msg = cs_msg, .on_half_close = cs_half, .on_done = st_done};
static const link_call_cbs bidi_cbs = {
    .on_start = st_start, .on_msg = bidi_msg, .on_half_close = bidi_half, .on_done = st_done};

void diag_route(link_router *r, diag *d) {
  ASSERT(link_router_add(r, DIAG, "Unary", &unary_cbs, d) == 0);
  ASSERT(link_router_add(r, DIAG, "ServerStream", &ss_cbs, d) == 0);
  ASSERT(link_router_add(r, DIAG, "ClientStream", &cs_cbs, d) == 0);
  ASSERT(link_router_add(r, DIAG, "Bidi", &bidi_cbs, d) == 0);
  ASSERT(link_router_add(r, DIAG, "Bidi", &bidi_cbs, d) == -EEXIST);
  ASSERT(link_router_add(r, DIAG, "Nope", &bidi_cbs, d) == -ENOENT);
}

/* ---- fixture ---- */

static void on_tick(uv_timer_t *t) { (void)t; }

static void srv_ready(tern_link *l, void *ud) { ((fx *)ud)->srv_ready++; }
static void srv_close(tern_link *l, const link_status *st, void *ud) {
  fx *f = ud;
  f->srv_closed++;
  f->srv_close_st = *st;
  f->srv_close_st.message = NULL;
  if (f->srv == l) f->srv = NULL;
}
static void cli_ready(tern_link *l, void *ud) { ((fx *)ud)->cli_ready++; }
static void cli_close(tern_link *l, const link_status *st, void *ud) {
  fx *f = ud;
  f->cli_closed++;
  f->cli_close_st = *st;
  snprintf(f->cli_close_msg, sizeof(f->cli_close_msg), "%s", st->message ? st->message : "");
  f->cli_close_st.message = f->cli_close_msg;
  if (f->cli == l) f->cli = NULL;
}

static void on_accept(link_listener *lst, tern_link *l, void *ud) {
  fx *f = ud;
  f->srv = l;
  f->srv_accepted++;
}

void fx_init(fx *f, int tls) {
  memset(f, 0, sizeof(*f));
  ASSERT(uv_loop_init(&f->loop) == 0);
  uv_timer_init(&f->loop, &f->tick);
  uv_timer_start(&f->tick, on_tick, 5, 5);
  ASSERT(link_router_new(&f->router) == 0);
  diag_route(f->router, &f->d);
  f->scfg.node_id = "node-1";
  f->scfg.region = "test";
  f->scfg.plane = LINK_PLANE_DATA;
  f->scfg.router = f->router;
  f->scfg.on_ready = srv_ready;
  f->scfg.on_close = srv_close;
  f->scfg.ud = f;
  f->ccfg.node_id = "edge-1";
  f->ccfg.region = "test";
  f->ccfg.plane = LINK_PLANE_DATA;
  f->ccfg.router = f->router; /* links are symmetric: the dialer serves too */
  f->ccfg.on_ready = cli_ready;
  f->ccfg.on_close = cli_close;
  f->ccfg.ud = f;
  if (tls) {
    ASSERT(certs_make(f->certdir, sizeof(f->certdir)) == 0);
    char cert[256], key[256], ca[256];
    snprintf(ca, sizeof(ca), "%s/ca.crt", f->certdir);
    snprintf(cert, sizeof(cert), "%s/srv.crt", f->certdir);
    snprintf(key, sizeof(key), "%s/srv.key", f->certdir);
    link_tls_opts so = {.server = 1, .cert_file = cert, .key_file = key, .ca_file = ca,
                        .require_peer_cert = 1};
    ASSERT(link_tls_new(&so, &f->stls) == 0);
    snprintf(cert, sizeof(cert), "%s/cli.crt", f->certdir);
    snprintf(key, sizeof(key), "%s/cli.key", f->certdir);
    link_tls_opts co = {.server = 0, .cert_file = cert, .key_file = key, .ca_file = ca};
    ASSERT(link_tls_new(&co, &f->ctls) == 0);
    f->scfg.tls = f->stls;
    f->ccfg.tls = f->ctls;
    f->ccfg.server_name = "127.0.0.1";
  }
}

void fx_listen(fx *f, int port) {
  ASSERT(link_listen(&f->loop, &f->scfg, "127.0.0.1", port, on_accept, f, &f->lst) == 0);
  f->port = link_listener_port(f->lst);
}

void fx_start(fx *f) {
  if (!f->lst) fx_listen(f, f->port);
  ASSERT(link_dial(&f->loop, &f->ccfg, "127.0.0.1", f->port, &f->cli) == 0);
  ASSERT(fx_run_until(f, &f->cli_ready, 5000));
  ASSERT(fx_run_until(f, &f->srv_ready, 5000));
}

int fx_run_until(fx *f, const int *flag, uint64_t timeout_ms) {
  uint64_t end = uv_hrtime() / 1000000u + timeout_ms;
  while (!*flag && uv_hrtime() / 1000000u < end) uv_run(&f->loop, UV_RUN_ONCE);
  return *flag != 0;
}

int fx_run_until_u64(fx *f, const uint64_t *v, uint64_t want, uint64_t timeout_ms) {
  uint64_t end = uv_hrtime() / 1000000u + timeout_ms;
  while (*v < want && uv_hrtime() / 1000000u < end) uv_run(&f->loop, UV_RUN_ONCE);
  return *v >= want;
}

void fx_run_ms(fx *f, uint64_t ms) {
  int never = 0;
  fx_run_until(f, &never, ms);
}

static void on_lst_closed(void *ud) { *(int *)ud = 1; }
static void walk_print(uv_handle_t *h, void *arg) {
  fprintf(stderr, "open handle type %s\n", uv_handle_type_name(h->type));
}

void fx_finish(fx *f) {
  int lst_closed = f->lst ? 0 : 1;
  if (f->cli) link_close(f->cli, NULL);
  if (f->lst) link_listener_close(f->lst, on_lst_closed, &lst_closed);
  ASSERT(fx_run_until(f, &lst_closed, 5000));
  int closed = 0;
  uv_close((uv_handle_t *)&f->tick, NULL);
  uint64_t end = uv_hrtime() / 1000000u + 5000;
  while (uv_run(&f->loop, UV_RUN_NOWAIT) && uv_hrtime() / 1000000u < end) closed++;
  if (uv_loop_close(&f->loop) != 0) {
    uv_walk(&f->loop, walk_print, NULL);
    ASSERT(!"loop still has handles");
  }
  link_router_free(f->router);
  free(f->d.executed);
  link_tls_free(f->stls);
  link_tls_free(f->ctls);
  if (f->certdir[0]) certs_remove(f->certdir);
}

/* ---- certificates: made per test run, never committed ---- */

int certs_make(char *dir, size_t len) {
  snprintf(dir, len, "/tmp/tern-link-certs-XXXXXX");
  if (!mkdtemp(dir)) return -errno;
  char cmd[4096];
  const char *ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  snprintf(cmd, sizeof(cmd),
           "cd %s && "
           "openssl req -x509 %s -keyout ca.key -out ca.crt -subj /CN=tern-test-ca -days 2 && "
           "openssl req %s -keyout srv.key -out srv.csr -subj /CN=tern-node && "
           "printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > ext.cnf && "
           "openssl x509 -req -in srv.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
           "-out srv.crt -days 2 -extfile ext.cnf && "
           "openssl req %s -keyout cli.key -out cli.csr -subj /CN=tern-edge && "
           "openssl x509 -req -in cli.csr -CA ca.crt -CAkey ca.key -CAcreateserial "
           "-out cli.crt -days 2",
           dir, ec, ec, ec);
  char full[4200];
  snprintf(full, sizeof(full), "(%s) >/dev/null 2>&1", cmd);
  return system(full) == 0 ? 0 : -EIO;
}

void certs_remove(const char *dir) {
  static const char *const names[] = {"ca.key", "ca.crt", "ca.srl", "srv.key", "srv.csr",
                                      "srv.crt", "cli.key", "cli.csr", "cli.crt", "ext.cnf"};
  char p[256];
  for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
    snprintf(p, sizeof(p), "%s/%s", dir, names[i]);
    unlink(p);
  }
  rmdir(dir);
}

/* ---- raw peer ---- */

static void raw_alloc(uv_handle_t *h, size_t s, uv_buf_t *b) {
  rawpeer *r = h->data;
  b->base = (char *)r->in + r->inlen;
  b->len = sizeof(r->in) - r->inlen;
  if (!b->len) { /* keep only the tail */
    r->inlen = 0;
    b->base = (char *)r->in;
    b->len = sizeof(r->in);
  }
}

static void raw_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  rawpeer *r = s->data;
  if (n > 0) r->inlen += (size_t)n;
  if (n < 0) {
    r->eof = 1;
    uv_read_stop(s);
  }
}

static void raw_written(uv_write_t *w, int status) {
  rawpeer *r = w->data;
  if (r->shutdown_after_write && status == 0) uv_shutdown(&r->sreq, (uv_stream_t *)&r->tcp, NULL);
}

static void raw_connected(uv_connect_t *c, int status) {
  rawpeer *r = c->data;
  if (status < 0) {
    r->eof = 1;
    return;
  }
  r->connected = 1;
  uv_read_start((uv_stream_t *)&r->tcp, raw_alloc, raw_read);
  uv_buf_t b = uv_buf_init((char *)r->out, (unsigned)r->outlen);
  r->wreq.data = r;
  if (r->outlen) uv_write(&r->wreq, (uv_stream_t *)&r->tcp, &b, 1, raw_written);
}

void raw_start(fx *f, rawpeer *r, int port) {
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", port, &a);
  uv_tcp_init(&f->loop, &r->tcp);
  r->tcp.data = r;
  r->creq.data = r;
  ASSERT(uv_tcp_connect(&r->creq, &r->tcp, (const struct sockaddr *)&a, raw_connected) == 0);
}

static void raw_closed(uv_handle_t *h) { ((rawpeer *)h->data)->closed = 1; }

void raw_close(rawpeer *r) {
  if (!uv_is_closing((uv_handle_t *)&r->tcp)) uv_close((uv_handle_t *)&r->tcp, raw_closed);
}

void raw_put(rawpeer *r, const void *p, size_t n) {
  ASSERT(r->outlen + n <= sizeof(r->out));
  memcpy(r->out + r->outlen, p, n);
  r->outlen += n;
}

void raw_put_frame(rawpeer *r, uint8_t type, uint8_t flags, uint32_t id, const void *p,
                   uint32_t n) {
  uint8_t h[LINK_FRAME_HEADER_BYTES];
  link_frame_header_put(h, n, type, flags, id);
  raw_put(r, h, sizeof(h));
  if (n) raw_put(r, p, n);
}

void raw_put_hello(rawpeer *r) {
  raw_put(r, LINK_PREFACE, LINK_PREFACE_BYTES);
  Tern__Link__Settings s = TERN__LINK__SETTINGS__INIT;
  s.version = LINK_VERSION;
  uint8_t buf[256];
  size_t n = tern__link__settings__pack(&s, buf);
  raw_put_frame(r, LINK_FRAME_SETTINGS, 0, 0, buf, (uint32_t)n);
}

int raw_saw_frame(const rawpeer *r, uint8_t type) {
  if (r->inlen < LINK_PREFACE_BYTES) return 0;
  size_t off = LINK_PREFACE_BYTES;
  link_frame fr;
  long n;
  while ((n = link_frame_decode(r->in + off, r->inlen - off, LINK_MAX_FRAME_BYTES, &fr)) > 0) {
    if (fr.type == type) return 1;
    off += (size_t)n;
  }
  return 0;
}

void test_link_freeze(tern_link *l) {
  uv_read_stop((uv_stream_t *)&l->tcp);
  uv_timer_stop(&l->hb_timer);
  uv_timer_stop(&l->dl_timer);
  uv_idle_stop(&l->idle);
  l->connected = false; /* link_flush writes nothing any more */
}
