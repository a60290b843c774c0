/* Streams: the id map, receiving (message splitting, delivery, credit), ends, deadlines and the
 * server side of a call's opening. The API half of calls is in link_rpc.c. */
#include <assert.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "link_internal.h"

/* ---- arena ---- */

typedef struct arena_chunk {
  struct arena_chunk *next;
  max_align_t align[];
} arena_chunk;

static void *arena_alloc(void *ud, size_t size) {
  link_arena *a = ud;
  size = (size + 15u) & ~(size_t)15u;
  if (a->used + size <= a->cap) {
    void *p = a->base + a->used;
    a->used += size;
    return p;
  }
  if (a->total + size > LINK_ARENA_MAX_BYTES) return NULL;
  arena_chunk *ch = malloc(sizeof(*ch) + size);
  if (!ch) return NULL;
  ch->next = a->chunks;
  a->chunks = ch;
  a->total += size;
  return ch->align;
}

static void arena_free(void *ud, void *p) { (void)ud, (void)p; /* freed on reset */ }

void link_arena_init(link_arena *a, uint8_t *base, size_t cap) {
  a->base = base;
  a->cap = cap;
  a->used = a->total = 0;
  a->chunks = NULL;
  a->pa.alloc = arena_alloc;
  a->pa.free = arena_free;
  a->pa.allocator_data = a;
}

void link_arena_reset(link_arena *a) {
  arena_chunk *ch = a->chunks;
  while (ch) {
    arena_chunk *next = ch->next;
    free(ch);
    ch = next;
  }
  a->chunks = NULL;
  a->used = a->total = 0;
}

/* ---- id map ---- */

link_call *link_call_find(const tern_link *l, uint32_t id) {
  for (link_call *c = l->buckets[id & (l->nbuckets - 1)]; c; c = c->hnext)
    if (c->id == id) return c;
  return NULL;
}

static void map_del(link_call *c) {
  link_call **pp = &c->l->buckets[c->id & (c->l->nbuckets - 1)];
  while (*pp && *pp != c) pp = &(*pp)->hnext;
  if (*pp) *pp = c->hnext;
  c->hnext = NULL;
}

int link_call_alloc(tern_link *l, bool server, uint32_t id, link_call **out) {
  link_call *c = malloc(sizeof(*c));
  if (!c) return -ENOMEM;
  /* the scratch buffers at the end (arena, inline send buffer) need no zeroing */
  memset(c, 0, offsetof(link_call, marena_mem));
  c->l = l;
  c->id = id;
  c->server = server;
  c->hdr_sent = server; /* the accepting side sends no HEADERS */
  c->sbuf = c->inl;
  c->scap = sizeof(c->inl);
  c->send_credit = l->settings_rx ? l->peer.stream_window : LINK_STREAM_WINDOW_MIN;
  c->recv_avail = l->cfg.stream_window;
  c->start_us = link_now_us();
  link_arena_init(&c->marena, c->marena_mem, sizeof(c->marena_mem));
  link_arena_init(&c->harena, c->harena_mem, sizeof(c->harena_mem));
  uint32_t b = id & (l->nbuckets - 1);
  c->hnext = l->buckets[b];
  l->buckets[b] = c;
  lq_push(&l->calls, &c->all);
  if (server)
    l->n_remote++;
  else
    l->n_local++;
  *out = c;
  return 0;
}

static void free_call(link_call *c) {
  assert(c->done && !lq_linked(&c->rnode) && !lq_linked(&c->wnode) && !lq_linked(&c->dnode));
  if (c->sbuf != c->inl) free(c->sbuf);
  free(c->rbuf);
  free(c->st_detail);
  link_arena_reset(&c->marena);
  link_arena_reset(&c->harena);
  free(c);
}

static void detach(link_call *c) {
  tern_link *l = c->l;
  c->done = true;
  map_del(c);
  lq_remove(&c->all);
  lq_remove(&c->rnode);
  lq_remove(&c->wnode);
  lq_remove(&c->dnode);
  lq_remove(&c->xnode);
  lq_remove(&c->pnode);
  if (c->server)
    l->n_remote--;
  else
    l->n_local--;
}

void link_call_mark_done(link_call *c, int code, const char *msg, bool retryable) {
  if (c->done) return;
  detach(c);
  c->st_code = code;
  c->st_retryable = retryable;
  if (msg != c->st_msg) link_strlcpy(c->st_msg, sizeof(c->st_msg), msg);
  lq_push(&c->l->done, &c->all);
  link_kick(c->l);
}

/* Drops a call that never reached the wire, without callbacks (a start that failed half-way). */
void link_call_discard(link_call *c) {
  link_status st = {.code = LINK_CANCELLED, .message = "not sent"};
  detach(c);
  if (c->icpt_started)
    for (size_t i = 0; i < c->l->cfg.interceptor_count; i++)
      if (c->l->icpt[i].on_done) c->l->icpt[i].on_done(c, &st, c->l->icpt[i].ud);
  free_call(c);
}

void link_calls_reap(tern_link *l) {
  while (!lq_empty(&l->done)) {
    link_call *c = lq_entry(l->done.next, link_call, all);
    lq_remove(&c->all);
    if (c->unary_cb && c->st_code == LINK_OK && !c->last_msg) {
      c->st_code = LINK_INTERNAL;
      snprintf(c->st_msg, sizeof(c->st_msg), "no response message");
    }
    link_status st = {.code = c->st_code, .retryable = c->st_retryable, .message = c->st_msg,
                      .detail = c->st_detail, .detail_len = c->st_detail_len};
    if (c->icpt_started)
      for (size_t i = 0; i < l->cfg.interceptor_count; i++)
        if (l->icpt[i].on_done) l->icpt[i].on_done(c, &st, l->icpt[i].ud);
    if (c->unary_cb)
      c->unary_cb(c, &st, st.code == LINK_OK ? c->last_msg : NULL, c->ud);
    else if (c->cbs && c->cbs->on_done)
      c->cbs->on_done(c, &st, c->ud);
    free_call(c);
  }
  link_drain_check(l);
}

/* ---- receiving ---- */

static void consume(link_call *c, size_t n) {
  tern_link *l = c->l;
  c->credit_owed += (uint32_t)n;
  /* Return credit at half a window, or as soon as the peer's allowance is below half: with a
   * partial message buffered the peer may be blocked on exactly these bytes. */
  if ((c->credit_owed >= l->cfg.stream_window / 2 || c->recv_avail <= l->cfg.stream_window / 2) &&
      !lq_linked(&c->wnode)) {
    lq_push(&l->wupdate, &c->wnode);
    link_kick(l);
  }
}

static void fail_stream(link_call *c, int code, const char *msg) {
  link_ctrl_reset(c->l, c->id, code, false);
  link_call_mark_done(c, code, msg, false);
}

static void deliver(link_call *c, const uint8_t *m, uint32_t len) {
  if (!c->cbs || c->finished) return;
  if (c->cbs->on_raw) {
    c->cbs->on_raw(c, m, len, c->ud);
    return;
  }
  const ProtobufCMessageDescriptor *d = c->server ? c->method->input : c->method->output;
  link_arena_reset(&c->marena);
  c->last_msg = NULL;
  ProtobufCMessage *msg = protobuf_c_message_unpack(d, &c->marena.pa, len, m);
  if (!msg) {
    if (c->server)
      link_call_fail(c, LINK_INVALID_ARGUMENT, "cannot decode request", false);
    else
      fail_stream(c, LINK_INTERNAL, "cannot decode response");
    return;
  }
  c->last_msg = msg;
  if (c->cbs->on_msg) c->cbs->on_msg(c, msg, c->ud);
}

static bool stop(const link_call *c) { return c->done || c->paused || c->l->closing; }

/* Delivers the whole messages buffered in rbuf, then the half-close and a received status. */
static void drain_rbuf(link_call *c) {
  size_t off = 0;
  while (c->rlen - off >= 4 && !stop(c)) {
    const uint8_t *m;
    uint32_t mlen;
    long k = link_msg_next(c->rbuf + off, c->rlen - off, c->l->cfg.max_message, &m, &mlen);
    if (k == 0) break;
    if (k < 0) {
      fail_stream(c, LINK_RESOURCE_EXHAUSTED, "message too large");
      return;
    }
    off += (size_t)k;
    deliver(c, m, mlen);
    consume(c, (size_t)k);
  }
  if (c->done || c->l->closing) return;
  if (off) memmove(c->rbuf, c->rbuf + off, c->rlen - off);
  c->rlen -= off;
  if (c->paused || !c->remote_end) return;
  if (c->rlen) {
    fail_stream(c, LINK_DATA_LOSS, "stream ended inside a message");
    return;
  }
  if (!c->half_close_told) {
    c->half_close_told = true;
    if (c->cbs && c->cbs->on_half_close && !c->finished && !c->status_rx)
      c->cbs->on_half_close(c, c->ud);
  }
  if (c->status_rx && !c->done) link_call_mark_done(c, c->st_code, c->st_msg, c->st_retryable);
}

static int rbuf_append(link_call *c, const uint8_t *p, size_t n) {
  if (c->rlen + n > c->rcap) {
    size_t cap = c->rcap ? c->rcap : 4096;
    while (cap < c->rlen + n) cap *= 2;
    if (cap > c->l->cfg.stream_window) cap = c->l->cfg.stream_window;
    if (cap < c->rlen + n) return -ENOBUFS; /* cannot happen within the window */
    uint8_t *nb = realloc(c->rbuf, cap);
    if (!nb) return -ENOMEM;
    c->rbuf = nb;
    c->rcap = cap;
  }
  memcpy(c->rbuf + c->rlen, p, n);
  c->rlen += n;
  return 0;
}

void link_call_on_data(link_call *c, const uint8_t *p, size_t n, bool end) {
  if (c->rlen == 0) { /* fast path: whole messages straight from the read buffer */
    while (n && !stop(c)) {
      const uint8_t *m;
      uint32_t mlen;
      long k = link_msg_next(p, n, c->l->cfg.max_message, &m, &mlen);
      if (k == 0) break;
      if (k < 0) {
        fail_stream(c, LINK_RESOURCE_EXHAUSTED, "message too large");
        return;
      }
      p += k;
      n -= (size_t)k;
      deliver(c, m, mlen);
      consume(c, (size_t)k);
    }
    if (c->done || c->l->closing) return;
  }
  if (n && rbuf_append(c, p, n) < 0) {
    fail_stream(c, LINK_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  if (end) c->remote_end = true;
  drain_rbuf(c);
}

void link_call_on_status(link_call *c, const link_frame *f) {
  uint8_t mem[512];
  link_arena a;
  link_arena_init(&a, mem, sizeof(mem));
  Tern__Link__Status *s = tern__link__status__unpack(&a.pa, f->length, f->payload);
  if (!s) {
    link_arena_reset(&a);
    link_call_mark_done(c, LINK_INTERNAL, "malformed status", false);
    return;
  }
  c->st_code = s->code > 16 ? LINK_UNKNOWN : (int)s->code;
  c->st_retryable = s->retryable;
  link_strlcpy(c->st_msg, sizeof(c->st_msg), s->message);
  if (s->detail.len && s->detail.len <= LINK_STATUS_DETAIL_MAX && !c->st_detail) {
    c->st_detail = malloc(s->detail.len);
    if (c->st_detail) {
      memcpy(c->st_detail, s->detail.data, s->detail.len);
      c->st_detail_len = s->detail.len;
    }
  }
  link_arena_reset(&a);
  c->status_rx = true;
  c->remote_end = true;
  drain_rbuf(c);
}

void link_call_on_reset(link_call *c, uint32_t code, uint32_t flags) {
  int st = code > 16 ? LINK_UNKNOWN : (int)code;
  if (st == LINK_OK) st = LINK_CANCELLED;
  bool retry = flags & LINK_RESET_RETRYABLE;
  const char *msg = c->server ? "cancelled by the caller"
                    : retry   ? "refused by peer (not processed)"
                              : "reset by peer";
  link_call_mark_done(c, st, msg, retry);
}

void link_call_grow_credit(link_call *c, int64_t delta) {
  c->send_credit += delta;
  if (c->send_credit > 0) link_call_ready(c);
}

void link_calls_drain_resumed(tern_link *l) {
  while (!lq_empty(&l->resumed) && !l->closing) {
    link_call *c = lq_entry(l->resumed.next, link_call, pnode);
    lq_remove(&c->pnode);
    drain_rbuf(c);
  }
}

void link_calls_notify_writable(tern_link *l) {
  while (!lq_empty(&l->writable) && !l->closing) {
    link_call *c = lq_entry(l->writable.next, link_call, xnode);
    lq_remove(&c->xnode);
    if (c->done || !c->want_writable) continue;
    c->want_writable = false;
    if (c->cbs && c->cbs->on_writable) c->cbs->on_writable(c, c->ud);
  }
}

/* ---- deadlines: one timer per link, armed at the earliest deadline ---- */

void link_deadline_add(link_call *c) {
  tern_link *l = c->l;
  lq_push(&l->deadlines, &c->dnode);
  if (!l->dl_armed_ms || c->deadline_ms < l->dl_armed_ms) link_dl_arm(l, c->deadline_ms);
}

void link_deadline_fire(tern_link *l) {
  uint64_t now = uv_now(l->loop), next = 0;
  l->dl_armed_ms = 0;
  lnode *n = l->deadlines.next;
  while (n != &l->deadlines) {
    link_call *c = lq_entry(n, link_call, dnode);
    n = n->next;
    if (c->deadline_ms <= now) {
      lq_remove(&c->dnode);
      if (c->hdr_sent) link_ctrl_reset(l, c->id, LINK_DEADLINE_EXCEEDED, false);
      link_call_mark_done(c, LINK_DEADLINE_EXCEEDED, "deadline exceeded", false);
    } else if (!next || c->deadline_ms < next) {
      next = c->deadline_ms;
    }
  }
  if (next) link_dl_arm(l, next);
  link_calls_reap(l);
  link_flush(l);
}

/* ---- the accepting side of HEADERS ---- */


static void refuse(tern_link *l, uint32_t id, int code) {
  l->stats.calls_refused++;
  if (link_count_reset(l) == 0) link_ctrl_reset(l, id, code, true);
}

void link_call_serve(tern_link *l, uint32_t id, const link_frame *f) {
  l->max_peer_id = id;
  if (l->goaway_final && id > l->goaway_last) return refuse(l, id, LINK_UNAVAILABLE);
  if (l->n_remote >= l->cfg.max_streams) return refuse(l, id, LINK_UNAVAILABLE);
  link_call *c;
  if (link_call_alloc(l, true, id, &c) < 0) return refuse(l, id, LINK_RESOURCE_EXHAUSTED);
  l->stats.calls_in++;
  c->hdr = tern__link__call_header__unpack(&c->harena.pa, f->length, f->payload);
  if (!c->hdr || !c->hdr->method || c->hdr->n_metadata > LINK_METADATA_MAX) {
    link_call_fail(c, LINK_INVALID_ARGUMENT, "malformed call header", false);
    return;
  }
  link_strlcpy(c->method_name, sizeof(c->method_name), c->hdr->method);
  link_strlcpy(c->trace_id, sizeof(c->trace_id), c->hdr->trace_id);
  if (c->hdr->timeout_us) {
    c->deadline_ms = uv_now(l->loop) + (c->hdr->timeout_us + 999u) / 1000u;
    link_deadline_add(c);
  }
  const struct link_route *rt = l->cfg.router ? link_router_find(l->cfg.router, c->method_name)
                                              : NULL;
  if (!rt) {
    link_call_fail(c, LINK_UNIMPLEMENTED, "unknown method", false);
    return;
  }
  link_route_bind(c, rt);
  c->icpt_started = true;
  for (size_t i = 0; i < l->cfg.interceptor_count; i++) {
    int rc = l->icpt[i].on_start ? l->icpt[i].on_start(c, l->icpt[i].ud) : 0;
    if (rc) {
      link_call_fail(c, rc > 0 && rc <= 16 ? rc : LINK_PERMISSION_DENIED, "refused by interceptor",
                     false);
      return;
    }
  }
  if (c->cbs->on_start) c->cbs->on_start(c, c->ud);
}
