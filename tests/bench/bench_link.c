/* bench_link: the link's figures over real loopback sockets, one process, two threads (the
 * accepting side runs its own loop on the second core). Prints key=value lines:
 *   msgs_per_s                one-way 64-byte messages per second on one link (one stream)
 *   msgs_per_s_protobuf       the same as protobuf messages encoded/decoded per message
 *   unary_{1,64}_calls_per_s  unary calls per second with 1 and 64 concurrent callers,
 *   unary_{1,64}_mean_us/_p99_us   and their latency
 *   unary_allocs_per_call     heap allocations per unary call, both sides together
 *   stream_mb_per_s_alone / stream_mb_per_s_beside_stalled / stall_cost_pct
 *   ping_rtt_us_p50/_p99 idle and _loaded while the link carries data at full speed
 * Usage: bench_link [--quick] [--tls] [--unary-only] */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "link.h"
#include "link_call.h"
#include "tern/link.pb-c.h"

#define DIAG (&tern__link__link_diag__descriptor)

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define NO_MALLOC_COUNT 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define NO_MALLOC_COUNT 1
#endif

static _Atomic uint64_t g_allocs;
#ifndef NO_MALLOC_COUNT
/* Counting allocator: every heap allocation in the process, both threads. */
extern void *__libc_malloc(size_t n);
extern void *__libc_calloc(size_t a, size_t b);
extern void *__libc_realloc(void *p, size_t n);
extern void __libc_free(void *p);
void *malloc(size_t n) {
  atomic_fetch_add_explicit(&g_allocs, 1, memory_order_relaxed);
  return __libc_malloc(n);
}
void *calloc(size_t a, size_t b) {
  atomic_fetch_add_explicit(&g_allocs, 1, memory_order_relaxed);
  return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n) {
  atomic_fetch_add_explicit(&g_allocs, 1, memory_order_relaxed);
  return __libc_realloc(p, n);
}
void free(void *p) { __libc_free(p); }
#endif

#define CHECK(x)                                                                                 \
  do {                                                                                           \
    if (!(x)) {                                                                                  \
      fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #x);                      \
      abort();                                                                                   \
    }                                                                                            \
  } while (0)

static uint64_t now_ns(void) { return uv_hrtime(); }
static int g_quick, g_tls, g_unary_only;

/* ---------------- the accepting side, on its own thread ---------------- */

typedef struct server {
  uv_loop_t loop;
  uv_async_t stop;
  link_router *router;
  link_listener *lst;
  link_tls *tls;
  _Atomic int port;
  pthread_t th;
} server;

typedef struct sink {
  uint64_t n, bytes;
} sink;

static void sink_start(link_call *c, void *ud) {
  sink *s = calloc(1, sizeof(*s));
  CHECK(s);
  link_call_set_ud(c, s);
}
static void sink_raw(link_call *c, const uint8_t *d, size_t n, void *ud) {
  sink *s = ud;
  s->n++;
  s->bytes += n;
}
static void sink_half(link_call *c, void *ud) {
  sink *s = ud;
  Tern__Link__Echo out = TERN__LINK__ECHO__INIT;
  out.id = s->n;
  out.count = (uint32_t)(s->bytes >> 10);
  /* raw mode: encode by hand through the descriptor-generic packer */
  uint8_t buf[64];
  size_t len = protobuf_c_message_pack(&out.base, buf);
  link_call_send_raw(c, buf, len);
  link_status ok = {.code = LINK_OK};
  link_call_finish(c, &ok);
}
static void sink_done(link_call *c, const link_status *st, void *ud) { free(ud); }

/* The same sink decoding every message through the method's descriptor (tern.link.Echo). */
static void psink_msg(link_call *c, const ProtobufCMessage *m, void *ud) {
  sink *s = ud;
  s->n++;
  s->bytes += ((const Tern__Link__Echo *)m)->data.len;
}
static void psink_half(link_call *c, void *ud) {
  sink *s = ud;
  Tern__Link__Echo out = TERN__LINK__ECHO__INIT;
  out.id = s->n;
  link_call_send(c, &out.base);
  link_status ok = {.code = LINK_OK};
  link_call_finish(c, &ok);
}

static void echo_msg(link_call *c, const ProtobufCMessage *m, void *ud) { link_call_reply(c, m); }

/* Flood: sends count raw messages of delay_ms bytes, as fast as credit allows. */
typedef struct flood {
  uint32_t sent, count, size;
  uint8_t *buf;
} flood;

static void flood_pump(link_call *c, flood *f) {
  while (f->sent < f->count) {
    int rc = link_call_send_raw(c, f->buf, f->size);
    if (rc == -EAGAIN) return;
    if (rc < 0) return;
    f->sent++;
  }
  link_status ok = {.code = LINK_OK};
  link_call_finish(c, &ok);
}
static void flood_start(link_call *c, void *ud) {
  flood *f = calloc(1, sizeof(*f));
  CHECK(f);
  link_call_set_ud(c, f);
}
static void flood_raw(link_call *c, const uint8_t *d, size_t n, void *ud) {
  flood *f = ud;
  Tern__Link__Echo *req = tern__link__echo__unpack(NULL, n, d);
  CHECK(req);
  f->count = req->count;
  f->size = req->delay_ms;
  tern__link__echo__free_unpacked(req, NULL);
  f->buf = calloc(1, f->size ? f->size : 1);
  CHECK(f->buf);
  flood_pump(c, f);
}
static void flood_writable(link_call *c, void *ud) { flood_pump(c, ud); }
static void flood_done(link_call *c, const link_status *st, void *ud) {
  flood *f = ud;
  free(f->buf);
  free(f);
}

static const link_call_cbs sink_cbs = {
    .on_start = sink_start, .on_raw = sink_raw, .on_half_close = sink_half, .on_done = sink_done};
static const link_call_cbs echo_cbs = {.on_msg = echo_msg};
static const link_call_cbs psink_cbs = {
    .on_start = sink_start, .on_msg = psink_msg, .on_half_close = psink_half, .on_done = sink_done};
static const link_call_cbs flood_cbs = {.on_start = flood_start, .on_raw = flood_raw,
                                        .on_writable = flood_writable, .on_done = flood_done};

static void lst_closed(void *ud) { (void)ud; }
static void on_stop(uv_async_t *a) {
  server *s = a->data;
  link_listener_close(s->lst, lst_closed, NULL);
  uv_close((uv_handle_t *)&s->stop, NULL);
}

static void *server_main(void *arg) {
  server *s = arg;
  uv_run(&s->loop, UV_RUN_DEFAULT);
  return NULL;
}

/* With shared set the accepting side lives on that loop (one thread), else on its own thread. */
static void server_start(server *s, const char *dir, uv_loop_t *shared) {
  memset(s, 0, sizeof(*s));
  uv_loop_t *loop = shared ? shared : &s->loop;
  if (!shared) CHECK(uv_loop_init(&s->loop) == 0);
  CHECK(link_router_new(&s->router) == 0);
  CHECK(link_router_add(s->router, DIAG, "ClientStream", &sink_cbs, NULL) == 0);
  CHECK(link_router_add(s->router, DIAG, "Unary", &echo_cbs, NULL) == 0);
  CHECK(link_router_add(s->router, DIAG, "ServerStream", &flood_cbs, NULL) == 0);
  CHECK(link_router_add(s->router, DIAG, "Bidi", &psink_cbs, NULL) == 0);
  link_config cfg = {.node_id = "bench-node", .router = s->router};
  if (dir) {
    char cert[256], key[256];
    snprintf(cert, sizeof(cert), "%s/srv.crt", dir);
    snprintf(key, sizeof(key), "%s/srv.key", dir);
    link_tls_opts o = {.server = 1, .cert_file = cert, .key_file = key};
    CHECK(link_tls_new(&o, &s->tls) == 0);
    cfg.tls = s->tls;
  }
  CHECK(link_listen(loop, &cfg, "127.0.0.1", 0, NULL, NULL, &s->lst) == 0);
  s->port = link_listener_port(s->lst);
  if (shared) return;
  uv_async_init(&s->loop, &s->stop, on_stop);
  s->stop.data = s;
  CHECK(pthread_create(&s->th, NULL, server_main, s) == 0);
}

static void set_flag(void *ud) { *(int *)ud = 1; }

static void server_stop_shared(server *s, uv_loop_t *loop) {
  int closed = 0;
  link_listener_close(s->lst, set_flag, &closed);
  uint64_t end = uv_hrtime() + 2000000000ull;
  while (!closed && uv_hrtime() < end && uv_run(loop, UV_RUN_NOWAIT)) {
  }
  link_router_free(s->router);
  link_tls_free(s->tls);
}

static void server_stop(server *s) {
  uv_async_send(&s->stop);
  pthread_join(s->th, NULL);
  CHECK(uv_loop_close(&s->loop) == 0);
  link_router_free(s->router);
  link_tls_free(s->tls);
}

/* ---------------- the dialing side, on the main thread ---------------- */

typedef struct client {
  uv_loop_t loop;
  uv_timer_t tick;
  tern_link *l;
  int ready, closed;
  link_tls *tls;
  uint64_t rtt[100000];
  size_t n_rtt;
  int collect_rtt;
} client;

static void c_ready(tern_link *l, void *ud) { ((client *)ud)->ready = 1; }
static void c_close(tern_link *l, const link_status *st, void *ud) { ((client *)ud)->closed = 1; }
static void c_rtt(tern_link *l, uint64_t us, void *ud) {
  client *c = ud;
  if (c->collect_rtt && c->n_rtt < sizeof(c->rtt) / sizeof(c->rtt[0])) c->rtt[c->n_rtt++] = us;
}
static void on_tick(uv_timer_t *t) { (void)t; }

static void run_until(client *c, const int *flag, uint64_t ms) {
  uint64_t end = now_ns() + ms * 1000000ull;
  while (!*flag && now_ns() < end) uv_run(&c->loop, UV_RUN_ONCE);
  CHECK(*flag);
}

static void client_init(client *c) {
  memset(c, 0, sizeof(*c));
  CHECK(uv_loop_init(&c->loop) == 0);
}

static uint32_t g_sockbuf;

static void client_start(client *c, int port, uint32_t ping_ms, const char *dir) {
  uv_timer_init(&c->loop, &c->tick);
  uv_timer_start(&c->tick, on_tick, 50, 50);
  link_config cfg = {.node_id = "bench-edge", .on_ready = c_ready, .on_close = c_close,
                     .on_rtt = c_rtt, .ud = c, .ping_interval_ms = ping_ms,
                     .dead_after = 100, .sockbuf_bytes = g_sockbuf};
  if (dir) {
    link_tls_opts o = {.server = 0};
    CHECK(link_tls_new(&o, &c->tls) == 0);
    cfg.tls = c->tls;
  }
  CHECK(link_dial(&c->loop, &cfg, "127.0.0.1", port, &c->l) == 0);
  run_until(c, &c->ready, 5000);
}

static void client_stop_keep(client *c) {
  link_close(c->l, NULL);
  run_until(c, &c->closed, 5000);
}

static void client_loop_close(client *c) {
  uv_close((uv_handle_t *)&c->tick, NULL);
  while (uv_run(&c->loop, UV_RUN_NOWAIT)) {
  }
  CHECK(uv_loop_close(&c->loop) == 0);
  link_tls_free(c->tls);
}

static void client_stop(client *c) {
  link_close(c->l, NULL);
  run_until(c, &c->closed, 5000);
  uv_close((uv_handle_t *)&c->tick, NULL);
  while (uv_run(&c->loop, UV_RUN_NOWAIT)) {
  }
  CHECK(uv_loop_close(&c->loop) == 0);
  link_tls_free(c->tls);
}

/* ---- one-way messages ---- */

typedef struct oneway {
  link_call *c;
  uint64_t sent, target;
  int done, proto;
  uint64_t got;
  uint8_t payload[64];
  Tern__Link__Echo msg;
} oneway;

static void ow_pump(oneway *o) {
  while (o->sent < o->target) {
    int rc = o->proto ? link_call_send(o->c, &o->msg.base)
                      : link_call_send_raw(o->c, o->payload, sizeof(o->payload));
    if (rc == -EAGAIN) return;
    CHECK(rc == 0);
    o->sent++;
  }
  link_call_close_send(o->c);
}
static void ow_writable(link_call *c, void *ud) { ow_pump(ud); }
static void ow_raw(link_call *c, const uint8_t *d, size_t n, void *ud) {
  oneway *o = ud;
  Tern__Link__Echo *e = tern__link__echo__unpack(NULL, n, d);
  CHECK(e);
  o->got = e->id;
  tern__link__echo__free_unpacked(e, NULL);
}
static void ow_done(link_call *c, const link_status *st, void *ud) {
  oneway *o = ud;
  CHECK(st->code == LINK_OK);
  o->done = 1;
}
static const link_call_cbs ow_cbs = {.on_raw = ow_raw, .on_writable = ow_writable,
                                     .on_done = ow_done};
static void ow_msg(link_call *c, const ProtobufCMessage *m, void *ud) {
  ((oneway *)ud)->got = ((const Tern__Link__Echo *)m)->id;
}
static const link_call_cbs ow_proto_cbs = {.on_msg = ow_msg, .on_writable = ow_writable,
                                           .on_done = ow_done};

/* One-way protobuf messages (tern.link.Echo with 64 data bytes): packed and decoded through the
 * descriptors on the real call path. */
static double bench_oneway_proto(client *c, uint64_t n) {
  static oneway o;
  memset(&o, 0, sizeof(o));
  o.target = n;
  o.proto = 1;
  tern__link__echo__init(&o.msg);
  o.msg.data.data = o.payload;
  o.msg.data.len = sizeof(o.payload);
  CHECK(link_call_start(c->l, DIAG, "Bidi", NULL, &ow_proto_cbs, &o, &o.c) == 0);
  uint64_t t0 = now_ns();
  ow_pump(&o);
  run_until(c, &o.done, 60000);
  double s = (double)(now_ns() - t0) / 1e9;
  CHECK(o.got == n);
  return (double)n / s;
}

static double bench_oneway(client *c, uint64_t n) {
  static oneway o;
  memset(&o, 0, sizeof(o));
  o.target = n;
  CHECK(link_call_start(c->l, DIAG, "ClientStream", NULL, &ow_cbs, &o, &o.c) == 0);
  uint64_t t0 = now_ns();
  ow_pump(&o);
  run_until(c, &o.done, 60000);
  double s = (double)(now_ns() - t0) / 1e9;
  CHECK(o.got == n);
  return (double)n / s;
}

/* ---- unary ---- */

typedef struct ucaller {
  struct ubench *b;
  uint64_t t0;
} ucaller;

typedef struct ubench {
  client *c;
  uint64_t done, target, started;
  uint64_t *lat;
  ucaller callers[64];
  Tern__Link__Echo req;
  uint8_t data[64];
  int finished;
} ubench;

static void u_issue(ucaller *k);

static void u_done(link_call *call, const link_status *st, const ProtobufCMessage *resp,
                   void *ud) {
  ucaller *k = ud;
  ubench *b = k->b;
  CHECK(st->code == LINK_OK && resp);
  b->lat[b->done++] = (now_ns() - k->t0) / 1000u;
  if (b->done == b->target) b->finished = 1;
  u_issue(k);
}

static void u_issue(ucaller *k) {
  ubench *b = k->b;
  if (b->started >= b->target) return;
  b->started++;
  k->t0 = now_ns();
  CHECK(link_unary(b->c->l, DIAG, "Unary", &b->req.base, NULL, u_done, k) == 0);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void bench_unary(client *c, int conc, uint64_t n, const char *key, int count_allocs) {
  ubench b;
  memset(&b, 0, sizeof(b));
  b.c = c;
  b.target = n;
  b.lat = malloc(n * sizeof(uint64_t));
  CHECK(b.lat);
  tern__link__echo__init(&b.req);
  b.req.data.data = b.data;
  b.req.data.len = sizeof(b.data);
  uint64_t a0 = atomic_load(&g_allocs);
  uint64_t t0 = now_ns();
  for (int i = 0; i < conc; i++) {
    b.callers[i].b = &b;
    u_issue(&b.callers[i]);
  }
  run_until(c, &b.finished, 120000);
  double s = (double)(now_ns() - t0) / 1e9;
  uint64_t allocs = atomic_load(&g_allocs) - a0;
  (void)allocs;
  if (!key) { /* warm-up run */
    free(b.lat);
    return;
  }
  qsort(b.lat, n, sizeof(uint64_t), cmp_u64);
  double sum = 0;
  for (uint64_t i = 0; i < n; i++) sum += (double)b.lat[i];
  printf("unary_%s_calls_per_s=%.0f\n", key, (double)n / s);
  printf("unary_%s_mean_us=%.1f\n", key, sum / (double)n);
  printf("unary_%s_p99_us=%llu\n", key, (unsigned long long)b.lat[n * 99 / 100]);
  if (count_allocs) {
#ifdef NO_MALLOC_COUNT
    printf("unary_allocs_per_call=n/a\n");
#else
    printf("unary_allocs_per_call=%.2f\n", (double)allocs / (double)n);
#endif
  }
  free(b.lat);
}

/* ---- a stream beside a stalled one ---- */

typedef struct srx {
  uint64_t bytes;
  int done;
} srx;
static void srx_raw(link_call *c, const uint8_t *d, size_t n, void *ud) {
  ((srx *)ud)->bytes += n;
}
static void srx_done(link_call *c, const link_status *st, void *ud) { ((srx *)ud)->done = 1; }
static const link_call_cbs srx_cbs = {.on_raw = srx_raw, .on_done = srx_done};

static link_call *start_flood(client *c, srx *r, uint32_t count, uint32_t size, int paused) {
  link_call *call;
  CHECK(link_call_start(c->l, DIAG, "ServerStream", NULL, &srx_cbs, r, &call) == 0);
  if (paused) link_call_pause(call, 1);
  Tern__Link__Echo req = TERN__LINK__ECHO__INIT;
  req.count = count;
  req.delay_ms = size;
  uint8_t buf[32];
  size_t len = protobuf_c_message_pack(&req.base, buf);
  CHECK(link_call_send_raw(call, buf, len) == 0);
  CHECK(link_call_close_send(call) == 0);
  return call;
}

static double stream_mb_per_s(client *c, uint32_t count) {
  srx r = {0};
  start_flood(c, &r, count, 16 * 1024, 0);
  uint64_t t0 = now_ns();
  run_until(c, &r.done, 60000);
  return (double)r.bytes / 1048576.0 / ((double)(now_ns() - t0) / 1e9);
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

/* Alternates runs alone and beside a stalled stream (median of 3 each), so machine noise does
 * not land on one side only. */
static void bench_stall(client *c, uint32_t count) {
  double alone[3], beside[3];
  stream_mb_per_s(c, count / 4); /* warm up */
  for (int i = 0; i < 3; i++) {
    alone[i] = stream_mb_per_s(c, count);
    srx stalled = {0};
    link_call *a = start_flood(c, &stalled, 1000000, 16 * 1024, 1);
    beside[i] = stream_mb_per_s(c, count);
    link_call_cancel(a);
    run_until(c, &stalled.done, 5000);
  }
  qsort(alone, 3, sizeof(double), cmp_double);
  qsort(beside, 3, sizeof(double), cmp_double);
  printf("stream_mb_per_s_alone=%.0f\n", alone[1]);
  printf("stream_mb_per_s_beside_stalled=%.0f\n", beside[1]);
  printf("stall_cost_pct=%.1f\n",
         alone[1] > beside[1] ? (alone[1] - beside[1]) * 100.0 / alone[1] : 0.0);
}

/* ---- ping RTT ---- */

static void print_rtt(client *c, const char *key) {
  if (!c->n_rtt) {
    printf("ping_rtt_us_p50_%s=n/a\nping_rtt_us_p99_%s=n/a\n", key, key);
    return;
  }
  qsort(c->rtt, c->n_rtt, sizeof(uint64_t), cmp_u64);
  printf("ping_rtt_us_p50_%s=%llu\n", key, (unsigned long long)c->rtt[c->n_rtt / 2]);
  printf("ping_rtt_us_p99_%s=%llu\n", key, (unsigned long long)c->rtt[c->n_rtt * 99 / 100]);
  printf("ping_samples_%s=%zu\n", key, c->n_rtt);
}

static void on_ping_timer(uv_timer_t *t) { link_ping(((client *)t->data)->l); }

/* Pings every millisecond (one outstanding at a time) on an idle link, then while the link
 * carries one-way data at full speed. */
static void ping_run(int port, const char *dir, uint64_t n, const char *key) {
  static client c;
  client_init(&c);
  client_start(&c, port, 1000, dir);
  uv_timer_t pt;
  uv_timer_init(&c.loop, &pt);
  pt.data = &c;
  uv_timer_start(&pt, on_ping_timer, 1, 1);
  c.collect_rtt = 1;
  char k[64];
  if (!g_sockbuf) {
    int never = 0;
    uint64_t end = now_ns() + 300000000ull;
    while (!never && now_ns() < end) uv_run(&c.loop, UV_RUN_ONCE);
    print_rtt(&c, "idle");
    c.n_rtt = 0;
  }
  double mps = bench_oneway(&c, n);
  snprintf(k, sizeof(k), "loaded%s", key);
  print_rtt(&c, k);
  if (g_sockbuf) printf("msgs_per_s%s=%.0f\n", key, mps);
  c.collect_rtt = 0;
  uv_close((uv_handle_t *)&pt, NULL);
  client_stop(&c);
}

static void bench_ping(int port, const char *dir, uint64_t n) {
  ping_run(port, dir, n, "");
  g_sockbuf = 128 * 1024; /* small socket buffers, as a control link would use */
  ping_run(port, dir, n, "_sockbuf_128k");
  g_sockbuf = 0;
}

/* ---- the floor: bare sockets, 64-byte ping-pong between two threads through epoll ---- */

static void *floor_echo(void *arg) {
  int fd = *(int *)arg;
  char b[64];
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN};
  epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
  for (;;) {
    struct epoll_event e;
    epoll_wait(ep, &e, 1, -1);
    ssize_t n = read(fd, b, sizeof(b));
    if (n <= 0 || write(fd, b, (size_t)n) != n) break;
  }
  close(ep);
  return NULL;
}

static double floor_rtt_us(int rounds) {
  int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof(sa);
  CHECK(ls >= 0 && bind(ls, (struct sockaddr *)&sa, sizeof(sa)) == 0 && listen(ls, 1) == 0);
  getsockname(ls, (struct sockaddr *)&sa, &len);
  int c = socket(AF_INET, SOCK_STREAM, 0);
  CHECK(connect(c, (struct sockaddr *)&sa, sizeof(sa)) == 0);
  int a = accept(ls, NULL, NULL);
  CHECK(a >= 0);
  setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  pthread_t th;
  CHECK(pthread_create(&th, NULL, floor_echo, &a) == 0);
  int ep = epoll_create1(0);
  struct epoll_event ev = {.events = EPOLLIN};
  epoll_ctl(ep, EPOLL_CTL_ADD, c, &ev);
  char b[64] = {0};
  uint64_t t0 = now_ns();
  for (int i = 0; i < rounds; i++) {
    struct epoll_event e;
    CHECK(write(c, b, sizeof(b)) == (ssize_t)sizeof(b));
    epoll_wait(ep, &e, 1, -1);
    CHECK(read(c, b, sizeof(b)) > 0);
  }
  double us = (double)(now_ns() - t0) / 1000.0 / rounds;
  shutdown(c, SHUT_RDWR);
  pthread_join(th, NULL);
  close(c);
  close(a);
  close(ls);
  close(ep);
  return us;
}

static const char *make_certs(char *dir, size_t len) {
  snprintf(dir, len, "/tmp/tern-bench-link-XXXXXX");
  if (!mkdtemp(dir)) return NULL;
  char cmd[1024];
  snprintf(cmd, sizeof(cmd),
           "cd %s && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
           "-keyout srv.key -out srv.crt -subj /CN=bench -days 1 >/dev/null 2>&1",
           dir);
  return system(cmd) == 0 ? dir : NULL;
}

static void remove_certs(const char *dir) {
  char p[300];
  snprintf(p, sizeof(p), "%s/srv.key", dir);
  unlink(p);
  snprintf(p, sizeof(p), "%s/srv.crt", dir);
  unlink(p);
  rmdir(dir);
}

int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    if (strcmp(argv[i], "--quick") == 0) g_quick = 1;
    else if (strcmp(argv[i], "--tls") == 0) g_tls = 1;
    else if (strcmp(argv[i], "--unary-only") == 0) g_unary_only = 1;
    else {
      fprintf(stderr, "usage: bench_link [--quick] [--tls] [--unary-only]\n");
      return 2;
    }
  }
  char dirbuf[64];
  const char *dir = g_tls ? make_certs(dirbuf, sizeof(dirbuf)) : NULL;
  CHECK(!g_tls || dir);
  server s;
  server_start(&s, dir, NULL);
  printf("transport=%s\n", g_tls ? "tls" : "tcp");
  printf("loopback_floor_rtt_us=%.1f\n", floor_rtt_us(g_quick ? 5000 : 50000));
  static client c;
  client_init(&c);
  client_start(&c, s.port, 1000, dir);
  uint64_t n = g_quick ? 500000 : 5000000;
  uint64_t nu = g_quick ? 20000 : 200000;
  if (!g_unary_only) {
    bench_oneway(&c, n / 5); /* warm up */
    printf("msgs_per_s=%.0f\n", bench_oneway(&c, n));
    printf("msgs_per_s_protobuf=%.0f\n", bench_oneway_proto(&c, n));
  }
  bench_unary(&c, 1, nu / 10, NULL, 0);
  bench_unary(&c, 1, nu, "1", 1);
  bench_unary(&c, 64, nu, "64", 0);
  if (!g_unary_only) bench_stall(&c, g_quick ? 2000 : 20000);
  client_stop(&c);
  if (!g_unary_only) bench_ping(s.port, dir, n);
  server_stop(&s);
  /* both ends on one loop and one thread: no cross-thread wake-up in the round trip */
  client_init(&c);
  server_start(&s, dir, &c.loop);
  client_start(&c, s.port, 1000, dir);
  bench_unary(&c, 1, nu / 10, NULL, 0);
  bench_unary(&c, 1, nu, "1_one_loop", 1);
  client_stop_keep(&c);
  server_stop_shared(&s, &c.loop);
  client_loop_close(&c);
  if (dir) remove_certs(dir);
  return 0;
}
