/* The writer: frames leave in priority order (LINK.md "outbound queues by class"):
 *   1. control frames (preface, settings, pings, pongs, resets, goaway) in the order queued,
 *   2. window updates (link, then streams),
 *   3. streams round-robin: a call's HEADERS on its first turn, then at most
 *      LINK_DATA_CHUNK_BYTES of data within stream and link credit, then its END or STATUS once
 *      every byte before it is out (a status never overtakes its stream's data).
 * At most LINK_WBUF_COUNT buffers sit in libuv at once; the rest waits here, where it can still
 * be reordered, so a ping never queues behind megabytes of data. */
#include <errno.h>
#include <string.h>

#include "link_internal.h"

void link_write_init(tern_link *l) {
  lq_init(&l->rq);
  lq_init(&l->blocked);
  lq_init(&l->wupdate);
  lq_init(&l->writable);
  lq_init(&l->resumed);
}

int link_ctrl_put(tern_link *l, const uint8_t *frame, size_t len) {
  if (l->closing) return -ESHUTDOWN;
  if (l->ctrl_count >= LINK_MAX_QUEUED_CONTROL || l->ctrl_len + len > sizeof(l->ctrl)) {
    link_fail(l, LINK_RESOURCE_EXHAUSTED, "control frame flood");
    return -ENOBUFS;
  }
  memcpy(l->ctrl + l->ctrl_len, frame, len);
  l->ctrl_len += len;
  l->ctrl_count++;
  link_kick(l);
  return 0;
}

int link_ctrl_reset(tern_link *l, uint32_t id, int code, bool retryable) {
  uint8_t fr[LINK_FRAME_HEADER_BYTES + 8];
  link_frame_put_reset(fr, id, (uint32_t)code, retryable ? LINK_RESET_RETRYABLE : 0);
  return link_ctrl_put(l, fr, sizeof(fr));
}

static bool has_work(const link_call *c) {
  if (c->done) return false;
  if (!c->hdr_sent) return true;
  size_t end = c->status_queued ? c->status_at : c->slen;
  if (end > c->soff) return c->send_credit > 0;
  return (c->end_queued && !c->end_sent) || (c->status_queued && !c->status_sent);
}

void link_call_ready(link_call *c) {
  if (lq_linked(&c->rnode) || !has_work(c)) return;
  lq_push(&c->l->rq, &c->rnode);
  link_kick(c->l);
}

/* Copies whole control frames (the preface first) that fit. */
static size_t put_ctrl(tern_link *l, uint8_t *buf, size_t cap) {
  size_t off = 0;
  uint32_t frames = 0;
  while (off < l->ctrl_len) {
    const uint8_t *p = l->ctrl + off;
    size_t flen = l->preface_sent ? LINK_FRAME_HEADER_BYTES + link_get_u32(p) : LINK_PREFACE_BYTES;
    if (flen > cap - off) break;
    if (!l->preface_sent) {
      l->preface_sent = true;
    } else {
      frames++;
      if (p[4] == LINK_FRAME_PING && !(p[5] & LINK_FLAG_ACK) && l->ping_outstanding &&
          link_get_u32(p + 16) == (uint32_t)l->ping_out)
        l->ping_sent_ns = uv_hrtime(); /* RTT and its timeout start when the ping leaves */
    }
    off += flen;
  }
  memcpy(buf, l->ctrl, off);
  memmove(l->ctrl, l->ctrl + off, l->ctrl_len - off);
  l->ctrl_len -= off;
  l->ctrl_count = frames > l->ctrl_count ? 0 : l->ctrl_count - frames;
  l->stats.frames_out += frames;
  return off;
}

static size_t put_windows(tern_link *l, uint8_t *buf, size_t cap) {
  size_t n = 0;
  if (l->link_credit_owed && l->link_credit_owed >= l->cfg.link_window / 2 && cap >= 16) {
    n += link_frame_put_window(buf, 0, l->link_credit_owed);
    l->recv_avail += l->link_credit_owed;
    l->link_credit_owed = 0;
  }
  while (!lq_empty(&l->wupdate) && cap - n >= 16) {
    link_call *c = lq_entry(l->wupdate.next, link_call, wnode);
    lq_remove(&c->wnode);
    if (!c->credit_owed) continue;
    n += link_frame_put_window(buf + n, c->id, c->credit_owed);
    c->recv_avail += c->credit_owed;
    c->credit_owed = 0;
  }
  return n;
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* One turn of call c. Returns bytes written into buf, or -1 when even the first frame it needs
 * does not fit (c stays at the head for the next buffer). */
static long put_turn(tern_link *l, link_call *c, uint8_t *buf, size_t cap) {
  size_t n = 0;
  if (!c->hdr_sent) {
    if (LINK_FRAME_HEADER_BYTES + c->hdr_len > cap) return -1;
    link_frame_header_put(buf, (uint32_t)c->hdr_len, LINK_FRAME_HEADERS, 0, c->id);
    memcpy(buf + LINK_FRAME_HEADER_BYTES, c->sbuf + c->soff, c->hdr_len);
    n += LINK_FRAME_HEADER_BYTES + c->hdr_len;
    c->soff += c->hdr_len;
    c->hdr_sent = true;
    l->stats.frames_out++;
  }
  size_t end = c->status_queued ? c->status_at : c->slen;
  size_t avail = end - c->soff;
  if (avail) {
    if (cap - n <= LINK_FRAME_HEADER_BYTES) return n ? (long)n : -1;
    int64_t chunk = min64((int64_t)avail, LINK_DATA_CHUNK_BYTES);
    chunk = min64(min64(chunk, c->send_credit), l->send_credit);
    chunk = min64(chunk, (int64_t)(cap - n - LINK_FRAME_HEADER_BYTES));
    if (chunk <= 0) return (long)n; /* out of credit: after_turn parks it */
    bool last = (size_t)chunk == avail && c->end_queued;
    link_frame_header_put(buf + n, (uint32_t)chunk, LINK_FRAME_DATA, last ? LINK_FLAG_END : 0,
                          c->id);
    memcpy(buf + n + LINK_FRAME_HEADER_BYTES, c->sbuf + c->soff, (size_t)chunk);
    n += LINK_FRAME_HEADER_BYTES + (size_t)chunk;
    c->soff += (size_t)chunk;
    c->send_credit -= chunk;
    l->send_credit -= chunk;
    avail -= (size_t)chunk;
    c->end_sent = c->end_sent || last;
    l->stats.frames_out++;
    if (avail) return (long)n;
  }
  if (c->end_queued && !c->end_sent) {
    if (cap - n < LINK_FRAME_HEADER_BYTES) return n ? (long)n : -1;
    /* only reached with every data byte out: END never overtakes data */
    link_frame_header_put(buf + n, 0, LINK_FRAME_DATA, LINK_FLAG_END, c->id);
    n += LINK_FRAME_HEADER_BYTES;
    c->end_sent = true;
    l->stats.frames_out++;
  }
  if (c->status_queued && !c->status_sent) {
    size_t slen = c->slen - c->status_at;
    if (cap - n < LINK_FRAME_HEADER_BYTES + slen) return n ? (long)n : -1;
    link_frame_header_put(buf + n, (uint32_t)slen, LINK_FRAME_STATUS, 0, c->id);
    memcpy(buf + n + LINK_FRAME_HEADER_BYTES, c->sbuf + c->status_at, slen);
    n += LINK_FRAME_HEADER_BYTES + slen;
    c->soff = c->slen;
    c->status_sent = true;
    l->stats.frames_out++;
  }
  return (long)n;
}

/* After a turn: back of the queue, the link-credit wait list, or out until credit arrives. */
static void after_turn(tern_link *l, link_call *c) {
  lq_remove(&c->rnode);
  if (c->soff == c->slen && !c->status_queued) c->soff = c->slen = 0;
  if (c->want_writable && c->slen - c->soff < l->cfg.stream_sendbuf / 2 && !lq_linked(&c->xnode))
    lq_push(&l->writable, &c->xnode);
  if (c->status_sent) {
    link_call_mark_done(c, c->st_code, c->st_msg, c->st_retryable);
    return;
  }
  size_t end = c->status_queued ? c->status_at : c->slen;
  if (end > c->soff && c->send_credit > 0 && l->send_credit <= 0)
    lq_push(&l->blocked, &c->rnode);
  else if (has_work(c))
    lq_push(&l->rq, &c->rnode);
}

static size_t put_streams(tern_link *l, uint8_t *buf, size_t cap) {
  size_t n = 0;
  while (!lq_empty(&l->rq) && cap - n > LINK_FRAME_HEADER_BYTES) {
    link_call *c = lq_entry(l->rq.next, link_call, rnode);
    long k = put_turn(l, c, buf + n, cap - n);
    if (k < 0) break;
    n += (size_t)k;
    after_turn(l, c);
  }
  return n;
}

static size_t fill(tern_link *l, uint8_t *buf, size_t cap) {
  size_t n = put_ctrl(l, buf, cap);
  if (!l->preface_sent || l->lingering) return n;
  n += put_windows(l, buf + n, cap - n);
  n += put_streams(l, buf + n, cap - n);
  return n;
}

static void on_write(uv_write_t *req, int status) {
  link_wbuf *w = lq_entry(req, link_wbuf, req);
  tern_link *l = w->l;
  w->busy = false;
  l->wbuf_busy--;
  if (l->closing) return;
  if (status < 0) {
    link_close_code(l, LINK_UNAVAILABLE, uv_strerror(status), true);
    return;
  }
  link_flush(l);
  link_calls_reap(l);
}

static link_wbuf *free_wbuf(tern_link *l) {
  for (int i = 0; i < LINK_WBUF_COUNT; i++)
    if (!l->wbuf[i].busy) return &l->wbuf[i];
  return NULL;
}

/* Produces the next buffer's bytes (ciphertext with TLS); 0 when there is nothing to send. */
static size_t produce(tern_link *l, link_wbuf *w) {
  if (!l->ssl) return fill(l, w->data, LINK_WBUF_BYTES);
  if (!link_tls_pending(l)) {
    if (!l->tls_done) return 0;
    size_t pn = fill(l, l->plain_out, LINK_WBUF_BYTES);
    if (!pn || link_tls_encrypt(l, l->plain_out, pn) < 0) return 0;
  }
  return link_tls_take(l, w->data, LINK_WBUF_BYTES + LINK_TLS_OVERHEAD_BYTES);
}

/* Writes produced buffers: uv_try_write first (no request, no callback, no epoll change), and
 * only what the socket did not take goes through uv_write, where it stays until written. At
 * most LINK_WBUF_COUNT such buffers are outstanding; one flush writes at most
 * LINK_FLUSH_MAX_BUFS buffers and asks for another loop turn for the rest. */
#define LINK_FLUSH_MAX_BUFS 16

static int write_buf(tern_link *l, link_wbuf *w, size_t len) {
  uv_buf_t b = uv_buf_init((char *)w->data, (unsigned)len);
  int n = uv_try_write((uv_stream_t *)&l->tcp, &b, 1);
  l->stats.writes++;
  l->stats.bytes_out += len;
  if (n == (int)len) return 0;
  if (n < 0 && n != UV_EAGAIN) return n;
  size_t off = n > 0 ? (size_t)n : 0;
  b = uv_buf_init((char *)w->data + off, (unsigned)(len - off));
  int rc = uv_write(&w->req, (uv_stream_t *)&l->tcp, &b, 1, on_write);
  if (rc < 0) return rc;
  w->busy = true;
  w->len = len;
  l->wbuf_busy++;
  return 0;
}

void link_flush(tern_link *l) {
  if (l->closing || !l->connected) return;
  link_wbuf *w;
  int bufs = 0;
  while ((w = free_wbuf(l)) != NULL) {
    if (bufs++ == LINK_FLUSH_MAX_BUFS) {
      link_kick(l);
      break;
    }
    size_t len = produce(l, w);
    if (!len || l->closing) break;
    int rc = write_buf(l, w, len);
    if (rc < 0) {
      link_close_code(l, LINK_UNAVAILABLE, uv_strerror(rc), true);
      return;
    }
  }
  if (l->closing) return;
  link_calls_notify_writable(l);
  /* flush always runs from a libuv callback, so finished calls can be reaped here rather than
   * one loop turn later; then the idle handle has nothing left to do */
  link_calls_reap(l);
  if (l->idle_on && bufs <= LINK_FLUSH_MAX_BUFS && lq_empty(&l->done) &&
      lq_empty(&l->resumed) && !l->closing) {
    l->idle_on = false;
    uv_idle_stop(&l->idle);
  }
  link_linger_check(l);
}
