/* Calls over real loopback sockets, plain TCP and TLS with mutual authentication: every call
 * kind, a thousand concurrent streams, a stalled stream, deadlines, cancellation both ways,
 * nested deadlines, the stream cap, message limits and interceptors. */
#include <errno.h>
#include <string.h>
#include <unistd.h>

#include "helpers.h"

static int g_tls; /* set by the group runner */

static Tern__Link__Echo echo(uint64_t id, const char *data, uint32_t count, uint32_t delay) {
  Tern__Link__Echo e = TERN__LINK__ECHO__INIT;
  e.id = id;
  e.data.data = (uint8_t *)data;
  e.data.len = data ? strlen(data) : 0;
  e.count = count;
  e.delay_ms = delay;
  return e;
}

static void unary(void **state) {
  fx f;
  fx_init(&f, g_tls);
  link_mw_metrics metrics = {0};
  link_mw_log log = {.out = stderr, .errors_only = 1};
  link_interceptor icpt[2] = {link_mw_metrics_interceptor(&metrics), link_mw_log_interceptor(&log)};
  f.ccfg.interceptors = icpt;
  f.ccfg.interceptor_count = 2;
  FILE *slog_out = tmpfile();
  ASSERT(slog_out);
  link_mw_log slog = {.out = slog_out};
  link_mw_metrics smetrics = {0};
  link_interceptor sicpt[2] = {link_mw_log_interceptor(&slog),
                               link_mw_metrics_interceptor(&smetrics)};
  f.scfg.interceptors = sicpt;
  f.scfg.interceptor_count = 2;
  fx_start(&f);
  const link_peer_info *p = link_peer(f.cli);
  ASSERT(p && strcmp(p->node_id, "node-1") == 0 && p->plane == LINK_PLANE_DATA);
  if (g_tls) {
    char subj[256];
    link_peer_subject(f.srv, subj, sizeof(subj));
    ASSERT(strstr(subj, "tern-edge"));
  }
  for (int i = 0; i < 50; i++) {
    cstate cs = {0};
    Tern__Link__Echo req = echo(100 + i, "ping", 0, 0);
    link_md md = {.key = "x-test", .value = "v1", .value_len = 2};
    link_call_opts o = {.timeout_us = 2000000, .trace_id = "trace-1", .md = &md, .md_count = 1};
    ASSERT(link_unary(f.cli, DIAG, "Unary", &req.base, &o, cstate_unary_done, &cs) == 0);
    ASSERT(fx_run_until(&f, &cs.done, 5000));
    ASSERT(cs.code == LINK_OK);
    ASSERT(cs.msgs == 1 && cs.last_id == (uint64_t)(100 + i) && cs.bytes == 4);
  }
  ASSERT(f.d.unary == 50);
  ASSERT(strcmp(f.d.md_seen, "v1") == 0);
  ASSERT(metrics.started == 50 && metrics.finished == 50 && metrics.by_code[LINK_OK] == 50);
  ASSERT(link_mw_metrics_percentile_us(&metrics, 99) > 0);
  /* server side: one log line per call, metrics per side */
  ASSERT(smetrics.server_calls == 50 && smetrics.client_calls == 0 && smetrics.finished == 50);
  char line[512];
  int lines = 0;
  rewind(slog_out);
  while (fgets(line, sizeof(line), slog_out)) {
    ASSERT(strstr(line, "link call server tern.link.LinkDiag/Unary OK "));
    ASSERT(strstr(line, "trace=trace-1"));
    lines++;
  }
  ASSERT(lines == 50);
  slog.out = NULL; /* later calls are not logged */
  fclose(slog_out);
  /* a host name instead of an address */
  tern_link *byname;
  int ready = f.cli_ready;
  ASSERT(link_dial(&f.loop, &f.ccfg, "localhost", f.port, &byname) == 0);
  uint64_t end = uv_hrtime() / 1000000u + 5000;
  while (f.cli_ready == ready && uv_hrtime() / 1000000u < end) uv_run(&f.loop, UV_RUN_ONCE);
  ASSERT(f.cli_ready == ready + 1);
  link_close(byname, NULL);
  /* a structured error: code, message, retryable flag and detail bytes */
  cstate er = {0};
  Tern__Link__Echo ereq = echo(1, NULL, 3, 0);
  ASSERT(link_unary(f.cli, DIAG, "Unary", &ereq.base, NULL, cstate_unary_done, &er) == 0);
  ASSERT(fx_run_until(&f, &er.done, 5000));
  ASSERT(er.code == LINK_NOT_FOUND && !er.retryable && strcmp(er.msg, "no such thing") == 0);
  ASSERT(er.detail_len == 12 && memcmp(er.detail, "detail-bytes", 12) == 0);
  /* unknown method on the wire: a router without it answers UNIMPLEMENTED */
  Tern__Link__Echo req = echo(1, NULL, 0, 0);
  ASSERT(link_unary(f.cli, DIAG, "NoSuch", &req.base, NULL, cstate_unary_done, NULL) == -ENOENT);
  fx_finish(&f);
}

static void streams(void **state) {
  fx f;
  fx_init(&f, g_tls);
  fx_start(&f);
  /* server streaming */
  cstate ss = {0};
  link_call *c;
  ASSERT(link_call_start(f.cli, DIAG, "ServerStream", NULL, &cstate_cbs, &ss, &c) == 0);
  Tern__Link__Echo req = echo(0, "abc", 300, 0);
  ASSERT(link_call_send(c, &req.base) == 0);
  ASSERT(link_call_close_send(c) == 0);
  ASSERT(link_call_send(c, &req.base) == -EPIPE);
  ASSERT(fx_run_until(&f, &ss.done, 5000));
  ASSERT(ss.code == LINK_OK && ss.msgs == 300 && ss.bytes == 900 && ss.last_id == 299);
  /* client streaming */
  cstate cs = {0};
  ASSERT(link_call_start(f.cli, DIAG, "ClientStream", NULL, &cstate_cbs, &cs, &c) == 0);
  uint64_t sum = 0;
  for (uint32_t i = 0; i < 200; i++) {
    Tern__Link__Echo m = echo(i, "x", 0, 0);
    ASSERT(link_call_send(c, &m.base) == 0);
    sum += i;
  }
  ASSERT(link_call_close_send(c) == 0);
  ASSERT(fx_run_until(&f, &cs.done, 5000));
  ASSERT(cs.code == LINK_OK && cs.msgs == 1 && cs.last_count == 200 && cs.last_id == sum);
  /* bidirectional: replies arrive while we still send */
  cstate bd = {0};
  ASSERT(link_call_start(f.cli, DIAG, "Bidi", NULL, &cstate_cbs, &bd, &c) == 0);
  for (uint32_t i = 0; i < 20; i++) {
    Tern__Link__Echo m = echo(i, "hello", 0, 0);
    ASSERT(link_call_send(c, &m.base) == 0);
    ASSERT(fx_run_until_u64(&f, &bd.msgs, i + 1, 5000));
  }
  ASSERT(link_call_close_send(c) == 0);
  ASSERT(fx_run_until(&f, &bd.done, 5000));
  ASSERT(bd.code == LINK_OK && bd.msgs == 20 && bd.bytes == 100);
  ASSERT(f.d.server_streams == 1 && f.d.client_streams == 1 && f.d.bidis == 1);
  /* the acceptor calls the dialer too: links are symmetric */
  cstate rev = {0};
  Tern__Link__Echo r = echo(7, "back", 0, 0);
  ASSERT(link_unary(f.srv, DIAG, "Unary", &r.base, NULL, cstate_unary_done, &rev) == 0);
  ASSERT(fx_run_until(&f, &rev.done, 5000));
  ASSERT(rev.code == LINK_OK && rev.last_id == 7);
  fx_finish(&f);
}

#define NSTREAMS 1000
static void thousand(void **state) {
  fx f;
  fx_init(&f, g_tls);
  fx_start(&f);
  static cstate cs[NSTREAMS];
  static link_call *calls[NSTREAMS];
  memset(cs, 0, sizeof(cs));
  for (int i = 0; i < NSTREAMS; i++)
    ASSERT(link_call_start(f.cli, DIAG, "Bidi", NULL, &cstate_cbs, &cs[i], &calls[i]) == 0);
  link_stats st;
  link_get_stats(f.cli, &st);
  ASSERT(st.streams_active == NSTREAMS);
  for (int r = 0; r < 5; r++)
    for (int i = 0; i < NSTREAMS; i++) {
      Tern__Link__Echo m = echo((uint64_t)i, "0123456789", 0, 0);
      ASSERT(link_call_send(calls[i], &m.base) == 0);
    }
  uint64_t total = 0;
  uint64_t end = uv_hrtime() / 1000000u + 10000;
  while (total < 5 * NSTREAMS && uv_hrtime() / 1000000u < end) {
    uv_run(&f.loop, UV_RUN_ONCE);
    total = 0;
    for (int i = 0; i < NSTREAMS; i++) total += cs[i].msgs;
  }
  ASSERT(total == 5 * NSTREAMS);
  for (int i = 0; i < NSTREAMS; i++) ASSERT(link_call_close_send(calls[i]) == 0);
  int done = 0;
  end = uv_hrtime() / 1000000u + 10000;
  while (done < NSTREAMS && uv_hrtime() / 1000000u < end) {
    uv_run(&f.loop, UV_RUN_ONCE);
    done = 0;
    for (int i = 0; i < NSTREAMS; i++) done += cs[i].done && cs[i].code == LINK_OK;
  }
  ASSERT(done == NSTREAMS);
  ASSERT(f.d.bidis == NSTREAMS);
  fx_finish(&f);
}

/* One stream's reader stops; another stream on the same link still gets all its bytes. */
static void stall(void **state) {
  fx f;
  fx_init(&f, g_tls);
  f.ccfg.stream_window = 256 * 1024;
  f.ccfg.max_message = 64 * 1024;
  fx_start(&f);
  cstate stalled = {0}, moving = {0};
  link_call *a, *b;
  Tern__Link__Echo req = echo(0, NULL, 100000, 16 * 1024); /* 100000 x 16 KiB = 1.6 GB */
  ASSERT(link_call_start(f.cli, DIAG, "ServerStream", NULL, &cstate_cbs, &stalled, &a) == 0);
  link_call_pause(a, 1);
  ASSERT(link_call_send(a, &req.base) == 0 && link_call_close_send(a) == 0);
  Tern__Link__Echo req2 = echo(0, NULL, 2000, 16 * 1024); /* 32 MiB */
  ASSERT(link_call_start(f.cli, DIAG, "ServerStream", NULL, &cstate_cbs, &moving, &b) == 0);
  ASSERT(link_call_send(b, &req2.base) == 0 && link_call_close_send(b) == 0);
  uint64_t t0 = uv_hrtime();
  ASSERT(fx_run_until(&f, &moving.done, 20000));
  ASSERT(moving.code == LINK_OK && moving.msgs == 2000);
  fprintf(stderr, "stall: 32 MiB beside a stalled stream in %.1f ms\n",
          (double)(uv_hrtime() - t0) / 1e6);
  ASSERT(stalled.msgs == 0 && !stalled.done);
  /* resume: the stalled stream delivers what it buffered (at most its window) and moves on */
  link_call_pause(a, 0);
  ASSERT(fx_run_until_u64(&f, &stalled.msgs, 100, 5000));
  link_call_cancel(a);
  ASSERT(fx_run_until(&f, &stalled.done, 5000));
  ASSERT(stalled.code == LINK_CANCELLED);
  ASSERT(fx_run_until_u64(&f, &f.d.done_cancelled, 1, 5000));
  fx_finish(&f);
}

static void deadlines(void **state) {
  fx f;
  fx_init(&f, g_tls);
  fx_start(&f);
  cstate cs = {0};
  Tern__Link__Echo req = echo(1, NULL, 0, 1);
  link_call_opts o = {.timeout_us = 50000};
  uint64_t t0 = uv_hrtime();
  ASSERT(link_unary(f.cli, DIAG, "Unary", &req.base, &o, cstate_unary_done, &cs) == 0);
  ASSERT(fx_run_until(&f, &cs.done, 5000));
  uint64_t ms = (uv_hrtime() - t0) / 1000000u;
  ASSERT(cs.code == LINK_DEADLINE_EXCEEDED && !cs.retryable);
  ASSERT(ms >= 45 && ms < 1000);
  /* the server's handler ends too: by its own deadline or the client's reset */
  ASSERT(fx_run_until_u64(&f, &f.d.done_deadline, 1, 2000));
  /* nested call: the callee sees the caller's remaining deadline and trace id */
  cstate nc = {0};
  Tern__Link__Echo nreq = echo(2, NULL, 1, 0);
  link_call_opts no = {.timeout_us = 300000, .trace_id = "trace-nested"};
  ASSERT(link_unary(f.cli, DIAG, "Unary", &nreq.base, &no, cstate_unary_done, &nc) == 0);
  ASSERT(fx_run_until(&f, &nc.done, 5000));
  ASSERT(nc.code == LINK_OK);
  ASSERT(f.d.nested_remaining_us > 0 && f.d.nested_remaining_us <= 300000);
  ASSERT(strcmp(f.d.nested_trace, "trace-nested") == 0);
  fx_finish(&f);
}

static void cancels(void **state) {
  fx f;
  fx_init(&f, g_tls);
  fx_start(&f);
  /* client cancels: its on_done says CANCELLED, the handler's on_done too */
  cstate cs = {0};
  link_call *c;
  Tern__Link__Echo req = echo(1, NULL, 0, 1);
  ASSERT(link_call_start(f.cli, DIAG, "Unary", NULL, &cstate_cbs, &cs, &c) == 0);
  ASSERT(link_call_send(c, &req.base) == 0);
  ASSERT(fx_run_until_u64(&f, &f.d.unary, 1, 5000));
  link_call_cancel(c);
  link_call_cancel(c); /* idempotent */
  ASSERT(!cs.done);   /* never from inside the call */
  ASSERT(fx_run_until(&f, &cs.done, 5000));
  ASSERT(cs.code == LINK_CANCELLED);
  ASSERT(fx_run_until_u64(&f, &f.d.done_cancelled, 1, 5000));
  /* server cancels: the client sees CANCELLED */
  cstate cs2 = {0};
  ASSERT(link_call_start(f.cli, DIAG, "Unary", NULL, &cstate_cbs, &cs2, &c) == 0);
  ASSERT(link_call_send(c, &req.base) == 0);
  ASSERT(fx_run_until_u64(&f, &f.d.unary, 2, 5000));
  ASSERT(f.d.hung);
  link_call_cancel(f.d.hung);
  ASSERT(fx_run_until(&f, &cs2.done, 5000));
  ASSERT(cs2.code == LINK_CANCELLED);
  fx_finish(&f);
}

/* The acceptor caps concurrent streams: opens above the cap are refused, retryable. */
static void stream_cap(void **state) {
  fx f;
  fx_init(&f, g_tls);
  f.scfg.max_streams = 4;
  fx_listen(&f, 0);
  ASSERT(link_dial(&f.loop, &f.ccfg, "127.0.0.1", f.port, &f.cli) == 0);
  cstate cs[10];
  memset(cs, 0, sizeof(cs));
  Tern__Link__Echo req = echo(1, NULL, 0, 1);
  for (int i = 0; i < 10; i++) /* sent before the acceptor's settings arrive */
    ASSERT(link_unary(f.cli, DIAG, "Unary", &req.base, NULL, cstate_unary_done, &cs[i]) == 0);
  fx_run_ms(&f, 300);
  int refused = 0, open = 0;
  for (int i = 0; i < 10; i++) {
    if (cs[i].done) {
      ASSERT(cs[i].code == LINK_UNAVAILABLE && cs[i].retryable);
      refused++;
    } else {
      open++;
    }
  }
  ASSERT(refused == 6 && open == 4);
  /* now the client knows the cap and says -EAGAIN itself */
  cstate extra = {0};
  ASSERT(link_unary(f.cli, DIAG, "Unary", &req.base, NULL, cstate_unary_done, &extra) == -EAGAIN);
  fx_finish(&f);
  for (int i = 0; i < 10; i++) ASSERT(cs[i].done);
}

static int deny_start(link_call *c, void *ud) {
  size_t n;
  return link_call_md(c, "deny", &n) ? LINK_PERMISSION_DENIED : 0;
}

static void limits(void **state) {
  fx f;
  fx_init(&f, g_tls);
  f.scfg.max_message = 2048;
  link_interceptor deny = {.on_start = deny_start};
  f.scfg.interceptors = &deny;
  f.scfg.interceptor_count = 1;
  fx_start(&f);
  static char big[4096];
  memset(big, 'x', sizeof(big) - 1);
  cstate cs = {0};
  Tern__Link__Echo req = echo(1, big, 0, 0);
  ASSERT(link_unary(f.cli, DIAG, "Unary", &req.base, NULL, cstate_unary_done, &cs) == -EMSGSIZE);
  /* a server-side interceptor refuses */
  link_md md = {.key = "deny", .value = "1", .value_len = 1};
  link_call_opts o = {.md = &md, .md_count = 1};
  Tern__Link__Echo small = echo(1, "a", 0, 0);
  ASSERT(link_unary(f.cli, DIAG, "Unary", &small.base, &o, cstate_unary_done, &cs) == 0);
  ASSERT(fx_run_until(&f, &cs.done, 5000));
  ASSERT(cs.code == LINK_PERMISSION_DENIED);
  ASSERT(f.d.unary == 0);
  /* bad configs are refused at creation */
  link_config bad = f.ccfg;
  bad.max_message = bad.stream_window = 64 * 1024;
  tern_link *l;
  ASSERT(link_dial(&f.loop, &bad, "127.0.0.1", f.port, &l) == -EINVAL);
  bad = f.ccfg;
  bad.ping_interval_ms = 1;
  ASSERT(link_dial(&f.loop, &bad, "127.0.0.1", f.port, &l) == -EINVAL);
  ASSERT(link_dial(&f.loop, &f.ccfg, "", f.port, &l) == -EINVAL);
  ASSERT(link_dial(&f.loop, &f.ccfg, "127.0.0.1", 0, &l) == -EINVAL);
  /* a name that does not resolve: the link closes, retryable */
  int closed = f.cli_closed;
  ASSERT(link_dial(&f.loop, &f.ccfg, "bad..name", f.port, &l) == 0);
  uint64_t end = uv_hrtime() / 1000000u + 5000;
  while (f.cli_closed == closed && uv_hrtime() / 1000000u < end) uv_run(&f.loop, UV_RUN_ONCE);
  ASSERT(f.cli_closed == closed + 1 && f.cli_close_st.code == LINK_UNAVAILABLE);
  ASSERT(f.cli_close_st.retryable && strstr(f.cli_close_msg, "resolve"));
  /* closed while resolving: nothing leaks, on_close still runs once */
  ASSERT(link_dial(&f.loop, &f.ccfg, "localhost", f.port, &l) == 0);
  link_close(l, NULL);
  end = uv_hrtime() / 1000000u + 5000;
  while (f.cli_closed == closed + 1 && uv_hrtime() / 1000000u < end) uv_run(&f.loop, UV_RUN_ONCE);
  ASSERT(f.cli_closed == closed + 2);
  fx_finish(&f);
}

/* Messages far larger than a frame and than the protocol's initial window, sent before the
 * peer's settings arrive, on several streams at once: reassembled whole, credit keeps flowing. */
static void big_messages(void **state) {
  fx f;
  fx_init(&f, g_tls);
  fx_listen(&f, 0);
  ASSERT(link_dial(&f.loop, &f.ccfg, "127.0.0.1", f.port, &f.cli) == 0);
  static char big[400 * 1024];
  for (size_t i = 0; i + 1 < sizeof(big); i++) big[i] = (char)('a' + i % 26);
  cstate cs[8];
  memset(cs, 0, sizeof(cs));
  for (int i = 0; i < 8; i++) {
    Tern__Link__Echo req = echo((uint64_t)i, big, 0, 0);
    ASSERT(link_unary(f.cli, DIAG, "Unary", &req.base, NULL, cstate_unary_done, &cs[i]) == 0);
  }
  for (int i = 0; i < 8; i++) {
    ASSERT(fx_run_until(&f, &cs[i].done, 10000));
    ASSERT(cs[i].code == LINK_OK && cs[i].bytes == sizeof(big) - 1 && cs[i].last_id == (uint64_t)i);
  }
  link_stats st;
  link_get_stats(f.cli, &st);
  ASSERT(st.bytes_out > 8 * sizeof(big) && st.calls_out == 8 && st.streams_active == 0);
  fx_finish(&f);
}

static uint64_t g_rtt_calls, g_rtt_last;
static void on_rtt(tern_link *l, uint64_t us, void *ud) {
  g_rtt_calls++;
  g_rtt_last = us;
}

/* Pings go out on the interval, and their round trip is measured. */
static void heartbeat(void **state) {
  fx f;
  fx_init(&f, g_tls);
  f.ccfg.ping_interval_ms = 20;
  f.ccfg.on_rtt = on_rtt;
  g_rtt_calls = 0;
  fx_start(&f);
  ASSERT(fx_run_until_u64(&f, &g_rtt_calls, 5, 2000));
  link_stats st;
  link_get_stats(f.cli, &st);
  ASSERT(st.pings >= 5 && st.rtt_us_last > 0 && st.rtt_us_min <= st.rtt_us_max);
  ASSERT(g_rtt_last < 1000000);
  ASSERT(link_ping(f.cli) == 0 || link_ping(f.cli) == -EBUSY);
  fx_finish(&f);
}

/* A listener serving several protocols on one port: it reads the first bytes, sees a link (or a
 * TLS ClientHello) and hands the socket over with link_adopt. */
typedef struct sniffer {
  fx *f;
  uv_tcp_t lst, conn;
  uint8_t buf[4096];
  size_t len;
  int adopted, conn_open;
  tern_link *l;
} sniffer;

static void sn_alloc(uv_handle_t *h, size_t s, uv_buf_t *b) {
  sniffer *sn = h->data;
  *b = uv_buf_init((char *)sn->buf + sn->len, (unsigned)(sizeof(sn->buf) - sn->len));
}
static void sn_closed(uv_handle_t *h) { ((sniffer *)h->data)->conn_open = 0; }
static void sn_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b) {
  sniffer *sn = s->data;
  if (n < 0) {
    uv_close((uv_handle_t *)s, sn_closed);
    return;
  }
  sn->len += (size_t)n;
  if (sn->len < LINK_PREFACE_BYTES) return;
  int is_link = sn->f->scfg.tls ? sn->buf[0] == 0x16 : link_preface_check(sn->buf, sn->len) == 1;
  ASSERT(is_link);
  uv_os_fd_t fd;
  ASSERT(uv_fileno((uv_handle_t *)s, &fd) == 0);
  int dupfd = dup(fd);
  ASSERT(dupfd >= 0);
  uv_read_stop(s);
  uv_close((uv_handle_t *)s, sn_closed);
  ASSERT(link_adopt(s->loop, &sn->f->scfg, dupfd, sn->buf, sn->len, &sn->l) == 0);
  sn->adopted = 1;
}
static void sn_conn(uv_stream_t *s, int status) {
  sniffer *sn = s->data;
  uv_tcp_init(s->loop, &sn->conn);
  sn->conn.data = sn;
  ASSERT(uv_accept(s, (uv_stream_t *)&sn->conn) == 0);
  sn->conn_open = 1;
  uv_read_start((uv_stream_t *)&sn->conn, sn_alloc, sn_read);
}

static void adopt(void **state) {
  fx f;
  fx_init(&f, g_tls);
  static sniffer sn;
  memset(&sn, 0, sizeof(sn));
  sn.f = &f;
  struct sockaddr_in a;
  uv_ip4_addr("127.0.0.1", 0, &a);
  uv_tcp_init(&f.loop, &sn.lst);
  sn.lst.data = &sn;
  ASSERT(uv_tcp_bind(&sn.lst, (const struct sockaddr *)&a, 0) == 0);
  ASSERT(uv_listen((uv_stream_t *)&sn.lst, 8, sn_conn) == 0);
  int len = sizeof(a);
  uv_tcp_getsockname(&sn.lst, (struct sockaddr *)&a, &len);
  ASSERT(link_dial(&f.loop, &f.ccfg, "127.0.0.1", ntohs(a.sin_port), &f.cli) == 0);
  ASSERT(fx_run_until(&f, &f.cli_ready, 5000));
  ASSERT(fx_run_until(&f, &f.srv_ready, 5000) && sn.adopted);
  cstate cs = {0};
  Tern__Link__Echo req = echo(77, "adopted", 0, 0);
  ASSERT(link_unary(f.cli, DIAG, "Unary", &req.base, NULL, cstate_unary_done, &cs) == 0);
  ASSERT(fx_run_until(&f, &cs.done, 5000));
  ASSERT(cs.code == LINK_OK && cs.last_id == 77);
  link_close(sn.l, NULL);
  ASSERT(fx_run_until(&f, &f.srv_closed, 5000));
  uv_close((uv_handle_t *)&sn.lst, NULL);
  fx_finish(&f);
}

static int setup_tcp(void **state) {
  g_tls = 0;
  return 0;
}
static int setup_tls(void **state) {
  g_tls = 1;
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(unary),    cmocka_unit_test(streams), cmocka_unit_test(thousand),
      cmocka_unit_test(stall),    cmocka_unit_test(deadlines), cmocka_unit_test(cancels),
      cmocka_unit_test(stream_cap), cmocka_unit_test(limits), cmocka_unit_test(adopt),
      cmocka_unit_test(big_messages), cmocka_unit_test(heartbeat),
  };
  int rc = cmocka_run_group_tests_name("link over tcp", tests, setup_tcp, NULL);
  rc |= cmocka_run_group_tests_name("link over tls", tests, setup_tls, NULL);
  return rc;
}
