/* The link's core: creation and teardown, the read path and frame dispatch, settings,
 * heartbeats, goaway and drain. The writer is in link_write.c, streams in link_calls.c. */
#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "link_internal.h"

#define DRAIN_PING_BIT (1ull << 63)
#define NBUCKETS 2048u


uint64_t link_now_us(void) { return uv_hrtime() / 1000u; }

const char *link_code_name(int code) {
  static const char *const names[] = {
      "OK",           "CANCELLED",         "UNKNOWN",          "INVALID_ARGUMENT",
      "DEADLINE_EXCEEDED", "NOT_FOUND",    "ALREADY_EXISTS",   "PERMISSION_DENIED",
      "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",  "OUT_OF_RANGE",
      "UNIMPLEMENTED", "INTERNAL",         "UNAVAILABLE",      "DATA_LOSS",
      "UNAUTHENTICATED"};
  return code >= 0 && code <= 16 ? names[code] : "?";
}

/* Fills zero fields with defaults and checks ranges (CONVENTIONS: limits checked at load). */
static int config_fix(link_config *c) {
#define FIX(f, def, lo, hi)                                                                      \
  do {                                                                                           \
    if (!c->f) c->f = (def);                                                                     \
    if (c->f < (lo) || c->f > (hi)) return -EINVAL;                                              \
  } while (0)
  FIX(max_streams, LINK_MAX_STREAMS_DEFAULT, LINK_MAX_STREAMS_MIN, LINK_MAX_STREAMS_MAX);
  FIX(stream_window, LINK_STREAM_WINDOW_DEFAULT, LINK_STREAM_WINDOW_MIN, LINK_STREAM_WINDOW_MAX);
  FIX(link_window, LINK_LINK_WINDOW_DEFAULT, LINK_LINK_WINDOW_MIN, LINK_LINK_WINDOW_MAX);
  FIX(max_message, LINK_MAX_MESSAGE_DEFAULT, LINK_MAX_MESSAGE_MIN, LINK_MAX_MESSAGE_MAX);
  FIX(stream_sendbuf, LINK_STREAM_SENDBUF_DEFAULT, 1024u, LINK_STREAM_SENDBUF_MAX);
  FIX(ping_interval_ms, LINK_PING_INTERVAL_MS_DEFAULT, LINK_PING_INTERVAL_MS_MIN,
      LINK_PING_INTERVAL_MS_MAX);
  FIX(dead_after, LINK_DEAD_AFTER_DEFAULT, LINK_DEAD_AFTER_MIN, LINK_DEAD_AFTER_MAX);
  FIX(handshake_timeout_ms, LINK_HANDSHAKE_TIMEOUT_MS_DEFAULT, 10u, 600000u);
  FIX(resets_per_s, LINK_RESETS_PER_S_DEFAULT, LINK_RESETS_PER_S_MIN, 1000000u);
  if (c->sockbuf_bytes && (c->sockbuf_bytes < 4096u || c->sockbuf_bytes > 64u << 20))
    return -EINVAL;
#undef FIX
  if (c->max_message > c->stream_window - 4) return -EINVAL;
  if (c->interceptor_count > LINK_MAX_INTERCEPTORS) return -EINVAL;
  if (c->interceptor_count && !c->interceptors) return -EINVAL;
  return 0;
}

/* Our preface and settings go first into the control queue, sent as soon as we can write. */
static int queue_hello(tern_link *l) {
  memcpy(l->ctrl, LINK_PREFACE, LINK_PREFACE_BYTES);
  l->ctrl_len = LINK_PREFACE_BYTES;
  Tern__Link__Settings s = TERN__LINK__SETTINGS__INIT;
  s.version = LINK_VERSION;
  s.node_id = (char *)(l->cfg.node_id ? l->cfg.node_id : "");
  s.region = (char *)(l->cfg.region ? l->cfg.region : "");
  s.plane = (Tern__Link__Plane)l->cfg.plane;
  s.max_streams = l->cfg.max_streams;
  s.stream_window = l->cfg.stream_window;
  s.link_window = l->cfg.link_window;
  s.max_message = l->cfg.max_message;
  s.max_frame = LINK_MAX_FRAME_BYTES;
  s.ping_interval_ms = l->cfg.ping_interval_ms;
  size_t n = tern__link__settings__get_packed_size(&s);
  if (n > 1024) return -EINVAL;
  uint8_t *p = l->ctrl + l->ctrl_len;
  link_frame_header_put(p, (uint32_t)n, LINK_FRAME_SETTINGS, 0, 0);
  tern__link__settings__pack(&s, p + LINK_FRAME_HEADER_BYTES);
  l->ctrl_len += LINK_FRAME_HEADER_BYTES + n;
  return 0;
}

static void on_handle_closed(uv_handle_t *h);
static void on_hb(uv_timer_t *t);
static void on_dl(uv_timer_t *t);
static void on_idle(uv_idle_t *h);

static void link_free_mem(tern_link *l) {
  for (int i = 0; i < LINK_WBUF_COUNT; i++) free(l->wbuf[i].data);
  free(l->rbuf);
  free(l->buckets);
  link_tls_detach(l);
  free(l);
}

int link_create(uv_loop_t *loop, const link_config *cfg, bool dialer, tern_link **out) {
  link_config c = *cfg;
  int rc = config_fix(&c);
  if (rc < 0) return rc;
  tern_link *l = calloc(1, sizeof(*l));
  if (!l) return -ENOMEM;
  l->loop = loop;
  l->cfg = c;
  if (c.interceptor_count) memcpy(l->icpt, c.interceptors, c.interceptor_count * sizeof(l->icpt[0]));
  l->dialer = dialer;
  l->next_id = dialer ? 1 : 2;
  l->rbuf = malloc(LINK_RBUF_BYTES);
  l->buckets = calloc(NBUCKETS, sizeof(*l->buckets));
  l->nbuckets = NBUCKETS;
  size_t wcap = LINK_WBUF_BYTES + (c.tls ? LINK_TLS_OVERHEAD_BYTES : 0);
  bool oom = !l->rbuf || !l->buckets;
  for (int i = 0; i < LINK_WBUF_COUNT; i++) {
    l->wbuf[i].l = l;
    l->wbuf[i].data = malloc(wcap);
    oom = oom || !l->wbuf[i].data;
  }
  if (oom) {
    link_free_mem(l);
    return -ENOMEM;
  }
  lq_init(&l->calls);
  lq_init(&l->done);
  lq_init(&l->deadlines);
  link_write_init(l);
  l->send_credit = LINK_LINK_WINDOW_MIN;
  l->recv_avail = c.link_window;
  l->peer.max_streams = LINK_MAX_STREAMS_PROTOCOL;
  l->peer.stream_window = LINK_STREAM_WINDOW_MIN;
  l->peer.link_window = LINK_LINK_WINDOW_MIN;
  l->peer.max_message = LINK_MAX_MESSAGE_MAX;
  l->peer.node_id = l->peer_node;
  l->peer.region = l->peer_region;
  l->stats.rtt_us_min = UINT64_MAX;
  if ((rc = queue_hello(l)) < 0 || (c.tls && (rc = link_tls_attach(l)) < 0)) {
    link_free_mem(l);
    return rc;
  }
  uv_tcp_init(loop, &l->tcp);
  uv_idle_init(loop, &l->idle);
  uv_timer_init(loop, &l->hb_timer);
  uv_timer_init(loop, &l->dl_timer);
  l->tcp.data = l->idle.data = l->hb_timer.data = l->dl_timer.data = l;
  l->connect_req.data = l;
  l->gai.data = l;
  l->handles_open = 4;
  l->created_ms = l->last_read_ms = uv_now(loop);
  /* One timer per link checks handshake, liveness, pings and linger: a quarter of the tighter
   * of the ping interval and the handshake timeout, at most 250 ms, so 1000 idle links cost
   * 4000 wake-ups per second at most. */
  uint64_t tick = l->cfg.ping_interval_ms < l->cfg.handshake_timeout_ms ? l->cfg.ping_interval_ms
                                                                         : l->cfg.handshake_timeout_ms;
  tick /= 4;
  if (tick > 250) tick = 250;
  if (tick < 2) tick = 2;
  uv_timer_start(&l->hb_timer, on_hb, tick, tick);
  *out = l;
  return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  tern_link *l = h->data;
  if (l->ssl) {
    buf->base = (char *)l->cipher_in;
    buf->len = LINK_TLS_READ_BYTES;
  } else {
    buf->base = (char *)l->rbuf + l->rlen;
    buf->len = LINK_RBUF_BYTES - l->rlen;
  }
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf) {
  tern_link *l = s->data;
  if (n == 0 || l->closing) return;
  if (n < 0) {
    link_close_code(l, LINK_UNAVAILABLE, n == UV_EOF ? "peer closed the link" : uv_strerror((int)n), true);
    return;
  }
  if (l->lingering) return;
  l->last_read_ms = uv_now(l->loop);
  l->stats.bytes_in += (uint64_t)n;
  if (l->ssl) {
    link_tls_on_read(l, (const uint8_t *)buf->base, (size_t)n);
  } else {
    l->rlen += (size_t)n;
    link_process(l);
  }
  if (l->closing) return;
  link_calls_reap(l);
  link_flush(l);
}

void link_start_io(tern_link *l) {
  l->connected = true;
  uv_tcp_nodelay(&l->tcp, 1);
  if (l->cfg.sockbuf_bytes) {
    int v = (int)l->cfg.sockbuf_bytes;
    uv_send_buffer_size((uv_handle_t *)&l->tcp, &v);
    v = (int)l->cfg.sockbuf_bytes;
    uv_recv_buffer_size((uv_handle_t *)&l->tcp, &v);
  }
  if (uv_read_start((uv_stream_t *)&l->tcp, on_alloc, on_read) < 0) {
    link_close_code(l, LINK_UNAVAILABLE, "read start failed", true);
    return;
  }
  l->read_started = true;
  if (l->ssl && link_tls_handshake(l) < 0) return;
  link_flush(l);
}

void link_check_ready(tern_link *l) {
  if (l->ready || !l->preface_ok || !l->settings_rx || (l->ssl && !l->tls_done)) return;
  l->ready = true;
  if (l->own_ready) l->own_ready(l);
  if (l->closing) return;
  if (l->cfg.on_ready) l->cfg.on_ready(l, l->cfg.ud);
}

static bool is_peer_id(const tern_link *l, uint32_t id) { return (id & 1u) == (l->dialer ? 0u : 1u); }

/* A frame for a stream we do not hold: fine for one that existed (it ended while the frame was
 * in flight), a protocol error for one never opened. */
static int unknown_stream(tern_link *l, uint32_t id) {
  if (is_peer_id(l, id) ? id <= l->max_peer_id : id < l->next_id) return 0;
  link_fail(l, LINK_INTERNAL, "frame for a stream never opened");
  return -EPROTO;
}

static int on_data(tern_link *l, const link_frame *f) {
  if ((int64_t)f->length > l->recv_avail) {
    link_fail(l, LINK_RESOURCE_EXHAUSTED, "link window exceeded");
    return -EPROTO;
  }
  l->recv_avail -= f->length;
  l->link_credit_owed += f->length;
  if (l->link_credit_owed >= l->cfg.link_window / 2) link_kick(l);
  link_call *c = link_call_find(l, f->stream_id);
  if (!c) return unknown_stream(l, f->stream_id);
  if (c->remote_end || (int64_t)f->length > c->recv_avail) {
    link_ctrl_reset(l, c->id, LINK_RESOURCE_EXHAUSTED, false);
    link_call_mark_done(c, LINK_RESOURCE_EXHAUSTED,
                        c->remote_end ? "data after end of stream" : "stream window exceeded",
                        false);
    return 0;
  }
  c->recv_avail -= f->length;
  link_call_on_data(c, f->payload, f->length, f->flags & LINK_FLAG_END);
  return 0;
}

static uint32_t pick(uint32_t v, uint32_t def, uint32_t lo, uint32_t hi, bool *bad) {
  if (!v) return def;
  if (v < lo || v > hi) *bad = true;
  return v;
}

static int on_settings(tern_link *l, const link_frame *f) {
  if (f->flags & LINK_FLAG_ACK) return 0;
  if (l->settings_rx) return 0; /* later settings change nothing; acknowledged all the same */
  uint8_t mem[1024];
  link_arena a;
  link_arena_init(&a, mem, sizeof(mem));
  Tern__Link__Settings *s = tern__link__settings__unpack(&a.pa, f->length, f->payload);
  bool bad = !s || s->version != LINK_VERSION;
  if (s && !bad) {
    link_peer_info *p = &l->peer;
    p->max_streams = pick(s->max_streams, LINK_MAX_STREAMS_PROTOCOL, LINK_MAX_STREAMS_MIN,
                          LINK_MAX_STREAMS_MAX, &bad);
    p->stream_window = pick(s->stream_window, LINK_STREAM_WINDOW_MIN, LINK_STREAM_WINDOW_MIN,
                            LINK_STREAM_WINDOW_MAX, &bad);
    p->link_window = pick(s->link_window, LINK_LINK_WINDOW_MIN, LINK_LINK_WINDOW_MIN,
                          LINK_LINK_WINDOW_MAX, &bad);
    p->max_message = pick(s->max_message, LINK_MAX_MESSAGE_PROTOCOL, LINK_MAX_MESSAGE_MIN,
                          LINK_MAX_MESSAGE_MAX, &bad);
    p->ping_interval_ms = s->ping_interval_ms;
    p->plane = s->plane;
    link_strlcpy(l->peer_node, sizeof(l->peer_node), s->node_id);
    link_strlcpy(l->peer_region, sizeof(l->peer_region), s->region);
  }
  link_arena_reset(&a);
  if (bad) {
    link_fail(l, LINK_INVALID_ARGUMENT, "bad settings");
    return -EPROTO;
  }
  l->settings_rx = true;
  l->send_credit += (int64_t)l->peer.link_window - LINK_LINK_WINDOW_MIN;
  for (lnode *n = l->calls.next; n != &l->calls; n = n->next)
    link_call_grow_credit(lq_entry(n, link_call, all),
                          (int64_t)l->peer.stream_window - LINK_STREAM_WINDOW_MIN);
  while (!lq_empty(&l->blocked)) {
    lnode *n = l->blocked.next;
    lq_remove(n);
    lq_push(&l->rq, n);
  }
  uint8_t ack[LINK_FRAME_HEADER_BYTES];
  link_frame_header_put(ack, 0, LINK_FRAME_SETTINGS, LINK_FLAG_ACK, 0);
  if (link_ctrl_put(l, ack, sizeof(ack)) < 0) return -ENOBUFS;
  link_check_ready(l);
  return 0;
}

static void send_final_goaway(tern_link *l) {
  uint8_t fr[LINK_FRAME_HEADER_BYTES + 8 + 16];
  l->goaway_last = l->max_peer_id;
  l->goaway_final = true;
  size_t n = link_frame_put_goaway(fr, l->goaway_last, 0, "drain", 5);
  link_ctrl_put(l, fr, n);
  link_kick(l);
}

static int on_ping(tern_link *l, const link_frame *f) {
  uint64_t v = ((uint64_t)link_get_u32(f->payload) << 32) | link_get_u32(f->payload + 4);
  if (!(f->flags & LINK_FLAG_ACK)) {
    uint8_t fr[LINK_FRAME_HEADER_BYTES + 8];
    link_frame_put_ping(fr, LINK_FLAG_ACK, v);
    return link_ctrl_put(l, fr, sizeof(fr));
  }
  if (v & DRAIN_PING_BIT) {
    if (l->goaway_sent && !l->goaway_final) send_final_goaway(l);
    return 0;
  }
  if (!l->ping_outstanding || v != l->ping_out || !l->ping_sent_ns) return 0;
  uint64_t rtt = (uv_hrtime() - l->ping_sent_ns) / 1000u;
  l->ping_outstanding = false;
  l->stats.rtt_us_last = rtt;
  if (rtt < l->stats.rtt_us_min) l->stats.rtt_us_min = rtt;
  if (rtt > l->stats.rtt_us_max) l->stats.rtt_us_max = rtt;
  if (l->cfg.on_rtt) l->cfg.on_rtt(l, rtt, l->cfg.ud);
  return 0;
}

static int on_goaway(tern_link *l, const link_frame *f) {
  uint32_t last, code;
  const uint8_t *text;
  size_t tlen;
  if (link_frame_goaway(f, &last, &code, &text, &tlen) < 0) return -EPROTO;
  if (l->goaway_rx && last > l->goaway_rx_last) last = l->goaway_rx_last;
  l->goaway_rx = true;
  l->goaway_rx_last = last;
  /* Calls above last were never processed: the caller may safely go elsewhere. */
  lnode *n = l->calls.next;
  while (n != &l->calls) {
    link_call *c = lq_entry(n, link_call, all);
    n = n->next;
    if (!c->server && c->id > last)
      link_call_mark_done(c, LINK_UNAVAILABLE, "not processed: peer is going away", true);
  }
  if (!l->goaway_told) {
    char msg[LINK_GOAWAY_TEXT_MAX + 1];
    memcpy(msg, text, tlen);
    msg[tlen] = 0;
    link_status st = {.code = (int)(code > 16 ? LINK_UNKNOWN : code), .retryable = 1, .message = msg};
    l->goaway_told = true;
    if (l->own_goaway) l->own_goaway(l, &st);
    if (l->cfg.on_goaway && !l->closing) l->cfg.on_goaway(l, &st, l->cfg.ud);
  }
  return 0;
}

static int on_window(tern_link *l, const link_frame *f) {
  uint32_t inc;
  if (link_frame_window(f, &inc) < 0) {
    link_fail(l, LINK_INTERNAL, "bad window increment");
    return -EPROTO;
  }
  if (f->stream_id == 0) {
    if (l->send_credit + inc > (int64_t)LINK_WINDOW_INC_MAX) {
      link_fail(l, LINK_RESOURCE_EXHAUSTED, "link window overflow");
      return -EPROTO;
    }
    l->send_credit += inc;
    while (!lq_empty(&l->blocked)) {
      lnode *n = l->blocked.next;
      lq_remove(n);
      lq_push(&l->rq, n);
    }
    link_kick(l);
    return 0;
  }
  link_call *c = link_call_find(l, f->stream_id);
  if (!c) return unknown_stream(l, f->stream_id);
  if (c->send_credit + inc > (int64_t)LINK_WINDOW_INC_MAX) {
    link_ctrl_reset(l, c->id, LINK_RESOURCE_EXHAUSTED, false);
    link_call_mark_done(c, LINK_RESOURCE_EXHAUSTED, "stream window overflow", false);
    return 0;
  }
  link_call_grow_credit(c, inc);
  return 0;
}

/* CVE-2023-44487: a peer resetting or getting refused faster than resets_per_s is closed. */
int link_count_reset(tern_link *l) {
  uint64_t now = uv_now(l->loop);
  if (now - l->rst_window_ms >= 1000) {
    l->rst_window_ms = now;
    l->rst_count = 0;
  }
  if (++l->rst_count <= l->cfg.resets_per_s) return 0;
  link_fail(l, LINK_RESOURCE_EXHAUSTED, "too many resets");
  return -EPROTO;
}

static int on_frame(tern_link *l, const link_frame *f) {
  l->stats.frames_in++;
  if (!l->settings_rx && f->type != LINK_FRAME_SETTINGS) {
    link_fail(l, LINK_INTERNAL, "first frame is not settings");
    return -EPROTO;
  }
  link_call *c;
  uint32_t code, flags;
  switch (f->type) {
  case LINK_FRAME_DATA:
    return on_data(l, f);
  case LINK_FRAME_HEADERS:
    if (!is_peer_id(l, f->stream_id) || f->stream_id <= l->max_peer_id) {
      link_fail(l, LINK_INTERNAL, "bad stream id in headers");
      return -EPROTO;
    }
    link_call_serve(l, f->stream_id, f);
    return 0;
  case LINK_FRAME_STATUS:
    c = link_call_find(l, f->stream_id);
    if (!c) return unknown_stream(l, f->stream_id);
    if (c->server) {
      link_fail(l, LINK_INTERNAL, "status from the calling side");
      return -EPROTO;
    }
    link_call_on_status(c, f);
    return 0;
  case LINK_FRAME_RESET:
    if (link_count_reset(l) < 0) return -EPROTO;
    link_frame_reset(f, &code, &flags);
    c = link_call_find(l, f->stream_id);
    if (!c) return unknown_stream(l, f->stream_id);
    link_call_on_reset(c, code, flags);
    return 0;
  case LINK_FRAME_SETTINGS:
    return on_settings(l, f);
  case LINK_FRAME_PING:
    return on_ping(l, f);
  case LINK_FRAME_GOAWAY:
    return on_goaway(l, f);
  case LINK_FRAME_WINDOW:
    return on_window(l, f);
  default:
    return 0;
  }
}

int link_process(tern_link *l) {
  size_t off = 0;
  int rc = 0;
  if (!l->preface_ok) {
    rc = link_preface_check(l->rbuf, l->rlen);
    if (rc == 0) return 0;
    if (rc < 0) {
      link_fail(l, LINK_UNIMPLEMENTED, rc == -EPROTONOSUPPORT ? "link version not supported"
                                                              : "not a link preface");
      return rc;
    }
    l->preface_ok = true;
    off = LINK_PREFACE_BYTES;
    rc = 0;
  }
  while (!l->closing && !l->lingering) {
    link_frame f;
    long n = link_frame_decode(l->rbuf + off, l->rlen - off, LINK_MAX_FRAME_BYTES, &f);
    if (n == 0) break;
    if (n < 0) {
      link_fail(l, LINK_INTERNAL, n == -EMSGSIZE ? "frame too large" : "malformed frame");
      rc = (int)n;
      break;
    }
    off += (size_t)n;
    if ((rc = on_frame(l, &f)) < 0) break;
  }
  if (rc < 0 || l->closing || l->lingering) {
    l->rlen = 0;
    return rc;
  }
  memmove(l->rbuf, l->rbuf + off, l->rlen - off);
  l->rlen -= off;
  return 0;
}

/* ---- heartbeats, deadlines, idle work ---- */

static void send_ping(tern_link *l) {
  uint8_t fr[LINK_FRAME_HEADER_BYTES + 8];
  l->ping_out = ++l->ping_seq & ~DRAIN_PING_BIT;
  l->ping_outstanding = true;
  l->ping_sent_ns = 0; /* set when the frame is actually handed to the socket */
  link_frame_put_ping(fr, 0, l->ping_out);
  if (link_ctrl_put(l, fr, sizeof(fr)) == 0) {
    l->stats.pings++;
    link_kick(l);
  }
}

int link_ping(tern_link *l) {
  if (l->closing || l->lingering) return -ESHUTDOWN;
  send_ping(l);
  return 0;
}

static void on_hb(uv_timer_t *t) {
  tern_link *l = t->data;
  uint64_t now = uv_now(l->loop);
  if (l->closing) return;
  if (l->lingering) {
    if (now - l->linger_start_ms >= LINK_LINGER_MS)
      link_close_code(l, l->close_code, l->close_msg, l->close_retryable);
    return;
  }
  if (!l->ready) {
    if (now - l->created_ms >= l->cfg.handshake_timeout_ms)
      link_close_code(l, LINK_UNAVAILABLE, "handshake timeout", true);
    return;
  }
  uint64_t dead_ms = (uint64_t)l->cfg.ping_interval_ms * l->cfg.dead_after;
  if (now - l->last_read_ms >= dead_ms) {
    link_close_code(l, LINK_UNAVAILABLE, "peer silent: link declared dead", true);
    return;
  }
  if (!l->ping_outstanding && now - l->last_ping_ms >= l->cfg.ping_interval_ms) {
    l->last_ping_ms = now;
    send_ping(l);
  }
}

static void on_dl(uv_timer_t *t) { link_deadline_fire(t->data); }

void link_dl_arm(tern_link *l, uint64_t at_ms) {
  uint64_t now = uv_now(l->loop);
  l->dl_armed_ms = at_ms;
  uv_timer_start(&l->dl_timer, on_dl, at_ms > now ? at_ms - now : 0, 0);
}

void link_kick(tern_link *l) {
  if (l->idle_on || l->closing) return;
  l->idle_on = true;
  uv_idle_start(&l->idle, on_idle);
}

static void on_idle(uv_idle_t *h) {
  tern_link *l = h->data;
  l->idle_on = false;
  uv_idle_stop(&l->idle);
  if (l->closing) return;
  if (l->adopt_len) { /* bytes a sniffing listener read before handing the socket over */
    l->adopt_len = 0;
    l->last_read_ms = uv_now(l->loop);
    if (l->ssl)
      link_tls_on_read(l, NULL, 0);
    else
      link_process(l);
    if (l->closing) return;
  }
  link_calls_drain_resumed(l);
  link_calls_reap(l);
  link_flush(l);
  link_calls_reap(l);
}

/* ---- teardown ---- */

static void store_status(tern_link *l, int code, const char *msg, bool retryable) {
  l->close_code = code;
  l->close_retryable = retryable;
  if (msg != l->close_msg) link_strlcpy(l->close_msg, sizeof(l->close_msg), msg);
}

static void finalize(tern_link *l) {
  link_calls_reap(l);
  assert(lq_empty(&l->calls) && lq_empty(&l->done) && l->n_local + l->n_remote == 0);
  assert(l->wbuf_busy == 0 && !l->resolving);
  link_status st = {.code = l->close_code, .retryable = l->close_retryable,
                    .message = l->close_msg};
  if (!l->silent) {
    if (l->owner_cb) l->owner_cb(l, &st, l->owner);
    if (l->cfg.on_close) l->cfg.on_close(l, &st, l->cfg.ud);
  }
  link_free_mem(l);
}

/* The memory goes once every handle closed and no name resolution is outstanding. */
void link_maybe_finalize(tern_link *l) {
  if (l->closing && l->handles_open == 0 && !l->resolving) finalize(l);
}

static void on_handle_closed(uv_handle_t *h) {
  tern_link *l = h->data;
  l->handles_open--;
  link_maybe_finalize(l);
}

void link_close_code(tern_link *l, int code, const char *msg, bool retryable) {
  if (l->closing) return;
  if (!l->lingering) store_status(l, code, msg, retryable);
  l->closing = true;
  while (!lq_empty(&l->calls))
    link_call_mark_done(lq_entry(l->calls.next, link_call, all), LINK_UNAVAILABLE,
                        l->close_msg, true);
  if (l->resolving) uv_cancel((uv_req_t *)&l->gai); /* its callback still runs */
  uv_close((uv_handle_t *)&l->tcp, on_handle_closed);
  uv_close((uv_handle_t *)&l->idle, on_handle_closed);
  uv_close((uv_handle_t *)&l->hb_timer, on_handle_closed);
  uv_close((uv_handle_t *)&l->dl_timer, on_handle_closed);
}

void link_close(tern_link *l, const link_status *st) {
  if (st)
    link_close_code(l, st->code, st->message, st->retryable);
  else
    link_close_code(l, LINK_UNAVAILABLE, "closed locally", true);
}

/* Stops reading, fails every call with the status, lets queued frames (a goaway) flush, then
 * closes; LINK_LINGER_MS at most. */
static void linger(tern_link *l, int code, const char *msg, bool retryable) {
  if (l->closing || l->lingering) return;
  store_status(l, code, msg, retryable);
  l->lingering = true;
  l->linger_start_ms = uv_now(l->loop);
  if (l->read_started) uv_read_stop((uv_stream_t *)&l->tcp);
  while (!lq_empty(&l->calls))
    link_call_mark_done(lq_entry(l->calls.next, link_call, all), code, msg, retryable);
  link_kick(l);
}

void link_linger_check(tern_link *l) {
  if (!l->lingering || l->closing || l->wbuf_busy) return;
  if (l->ctrl_len && l->connected) return;
  if (l->ssl && link_tls_pending(l)) return;
  link_close_code(l, l->close_code, l->close_msg, l->close_retryable);
}

void link_fail(tern_link *l, int code, const char *msg) {
  if (l->closing || l->lingering) return;
  uint8_t fr[LINK_FRAME_HEADER_BYTES + 8 + LINK_GOAWAY_TEXT_MAX];
  size_t n = link_frame_put_goaway(fr, l->max_peer_id, (uint32_t)code, msg, strlen(msg));
  l->ctrl_count = 0; /* the goaway must get through even when the queue is flooded */
  if (l->ctrl_len + n > sizeof(l->ctrl)) l->ctrl_len = 0;
  link_ctrl_put(l, fr, n);
  linger(l, code, msg, false);
}

void link_drain(tern_link *l) {
  if (l->closing || l->lingering || l->goaway_sent) return;
  uint8_t fr[LINK_FRAME_HEADER_BYTES + 8 + 16];
  l->goaway_sent = true;
  size_t n = link_frame_put_goaway(fr, LINK_STREAM_ID_MAX, 0, "drain", 5);
  link_ctrl_put(l, fr, n);
  link_frame_put_ping(fr, 0, DRAIN_PING_BIT | ++l->ping_seq);
  link_ctrl_put(l, fr, LINK_FRAME_HEADER_BYTES + 8);
  link_kick(l);
}

/* Called whenever calls end: a drained link with nothing left closes itself. */
void link_drain_check(tern_link *l) {
  if (l->closing || l->lingering || l->n_local + l->n_remote) return;
  if (l->goaway_final) {
    linger(l, LINK_OK, "drained", false);
  } else if (l->goaway_rx && l->goaway_rx_last != LINK_STREAM_ID_MAX) {
    linger(l, LINK_OK, "drained by peer", false);
  }
}

int link_is_usable(const tern_link *l) {
  return l->ready && !l->closing && !l->lingering && !l->goaway_rx && !l->goaway_sent;
}

const link_peer_info *link_peer(const tern_link *l) { return l->settings_rx ? &l->peer : NULL; }

void link_get_stats(const tern_link *l, link_stats *out) {
  *out = l->stats;
  out->streams_active = l->n_local + l->n_remote;
  if (out->rtt_us_min == UINT64_MAX) out->rtt_us_min = 0;
}

void *link_ud(const tern_link *l) { return l->cfg.ud; }
uv_loop_t *link_loop(const tern_link *l) { return l->loop; }
