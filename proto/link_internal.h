/* Private to proto/: the structures behind link.h and link_call.h. */
#ifndef TERN_LINK_INTERNAL_H
#define TERN_LINK_INTERNAL_H

#include <openssl/ssl.h>
#include <stdbool.h>
#include <string.h>

#include "link.h"
#include "link_call.h"
#include "link_frame.h"
#include "tern/link.pb-c.h"

/* Intrusive doubly-linked list (libuv's queue.h); removed nodes are poisoned with NULL. */
typedef struct lnode {
  struct lnode *next, *prev;
} lnode;

static inline void lq_init(lnode *h) { h->next = h->prev = h; }
static inline bool lq_empty(const lnode *h) { return h->next == h; }
static inline bool lq_linked(const lnode *n) { return n->next != NULL; }
static inline void lq_push(lnode *h, lnode *n) {
  n->prev = h->prev;
  n->next = h;
  h->prev->next = n;
  h->prev = n;
}
static inline void lq_push_front(lnode *h, lnode *n) {
  n->next = h->next;
  n->prev = h;
  h->next->prev = n;
  h->next = n;
}
static inline void lq_remove(lnode *n) {
  if (!n->next) return;
  n->prev->next = n->next;
  n->next->prev = n->prev;
  n->next = n->prev = NULL;
}
#define lq_entry(p, T, m) ((T *)((char *)(p) - offsetof(T, m)))

/* Copies src (NULL = "") into dst of cap bytes, truncating; returns the length copied. Cheaper
 * than snprintf on the per-call path. */
static inline size_t link_strlcpy(char *dst, size_t cap, const char *src) {
  size_t n = src ? strlen(src) : 0;
  if (n >= cap) n = cap - 1;
  if (n) memcpy(dst, src, n);
  dst[n] = 0;
  return n;
}

/* Bump allocator handed to protobuf-c: decoded messages cost no heap allocation while they fit
 * the inline bytes; overflow chunks go to the heap and are freed on reset. */
typedef struct link_arena {
  uint8_t *base;
  size_t cap, used, total;
  void *chunks;
  ProtobufCAllocator pa;
} link_arena;

void link_arena_init(link_arena *a, uint8_t *base, size_t cap);
void link_arena_reset(link_arena *a);

struct link_call {
  tern_link *l;
  uint32_t id;
  link_call *hnext;            /* id hash chain */
  lnode all;                   /* l->calls, then l->done */
  lnode rnode;                 /* l->ready or l->blocked: has something to send */
  lnode wnode;                 /* l->wupdate: owes the peer a window update */
  lnode dnode;                 /* l->deadlines */
  lnode xnode;                 /* l->writable */
  lnode pnode;                 /* l->resumed */
  bool server;                 /* we accepted it */
  bool hdr_sent, end_queued, end_sent, status_queued, status_sent;
  bool remote_end, status_rx, done, paused, want_writable, half_close_told, finished;
  bool icpt_started;
  const ProtobufCServiceDescriptor *svc;
  const ProtobufCMethodDescriptor *method;
  const link_call_cbs *cbs;
  void *ud;
  link_unary_cb unary_cb;
  int64_t send_credit;         /* bytes we may still send on this stream */
  int64_t recv_avail;          /* bytes the peer may still send */
  uint32_t credit_owed;        /* consumed bytes not yet returned to the peer */
  uint8_t *sbuf;               /* [soff, slen): HEADERS payload (first), data, STATUS payload */
  size_t soff, slen, scap, hdr_len, status_at;
  uint8_t *rbuf;               /* received bytes not yet delivered */
  size_t rlen, rcap;
  uint64_t start_us, deadline_ms;
  char method_name[LINK_METHOD_MAX + 1];
  char trace_id[64];
  Tern__Link__CallHeader *hdr; /* server: decoded header, in harena */
  const ProtobufCMessage *last_msg;
  int st_code, st_retryable;
  char st_msg[LINK_STATUS_MSG_MAX];
  uint8_t *st_detail;
  size_t st_detail_len;
  link_arena marena, harena;
  /* scratch, left uninitialised by link_call_alloc: keep last */
  uint8_t marena_mem[LINK_ARENA_INLINE_BYTES];
  uint8_t harena_mem[256];
  uint8_t inl[LINK_CALL_INLINE_BYTES];
};

typedef struct link_wbuf {
  uv_write_t req;
  tern_link *l;
  bool busy;
  size_t len;
  uint8_t *data;
} link_wbuf;

/* Whoever created the link (listener, dialer) hears about its end before the user does. */
typedef void (*link_owner_cb)(tern_link *l, const link_status *st, void *owner);

struct tern_link {
  uv_loop_t *loop;
  link_config cfg;
  link_interceptor icpt[LINK_MAX_INTERCEPTORS];
  bool dialer;
  bool connected, ready, closing, lingering, preface_ok, settings_rx, tls_done, idle_on;
  bool goaway_sent, goaway_final, goaway_rx, goaway_told, drain_wanted, read_started;
  int handles_open;
  uv_tcp_t tcp;
  uv_idle_t idle;
  uv_timer_t hb_timer, dl_timer;
  uv_connect_t connect_req;
  uv_getaddrinfo_t gai;        /* link_dial with a host name */
  bool resolving;
  uint64_t created_ms, last_read_ms, linger_start_ms, dl_armed_ms;
  /* closing */
  int close_code, close_retryable;
  char close_msg[LINK_STATUS_MSG_MAX];
  /* TLS */
  SSL *ssl;
  BIO *rbio, *wbio;
  uint8_t *cipher_in;          /* LINK_TLS_READ_BYTES */
  uint8_t *plain_out;          /* LINK_WBUF_BYTES of plaintext staging */
  /* read */
  uint8_t *rbuf;
  size_t rlen;
  /* write */
  link_wbuf wbuf[LINK_WBUF_COUNT];
  int wbuf_busy;
  uint8_t ctrl[LINK_CTRL_BYTES];
  size_t ctrl_len;
  uint32_t ctrl_count;
  lnode rq, blocked, wupdate, writable, resumed;
  uint32_t link_credit_owed;
  int64_t send_credit, recv_avail;
  /* calls */
  link_call **buckets;
  uint32_t nbuckets;
  uint32_t next_id, max_peer_id, max_local_sent, n_local, n_remote;
  lnode calls, done, deadlines;
  /* peer */
  link_peer_info peer;
  char peer_node[64], peer_region[64];
  uint32_t peer_max_frame;
  /* goaway */
  uint32_t goaway_last, goaway_rx_last;
  /* heartbeat */
  uint64_t ping_seq, ping_out, ping_sent_ns, last_ping_ms;
  bool ping_outstanding, ping_in_ctrl;
  /* rapid-reset guard */
  uint64_t rst_window_ms;
  uint32_t rst_count;
  link_stats stats;
  /* owner */
  link_owner_cb owner_cb;
  void (*own_ready)(tern_link *l);
  void (*own_goaway)(tern_link *l, const link_status *st);
  bool silent; /* creation failed half-way: close without callbacks */
  bool preface_sent;
  size_t adopt_len; /* link_adopt: first bytes waiting in rbuf (plain) or cipher_in (TLS) */
  void *owner;
  lnode owner_node;
};

/* link.c */
int link_create(uv_loop_t *loop, const link_config *cfg, bool dialer, tern_link **out);
void link_start_io(tern_link *l);
void link_fail(tern_link *l, int code, const char *msg); /* protocol error: goaway, linger, close */
void link_kick(tern_link *l);
void link_close_code(tern_link *l, int code, const char *msg, bool retryable);
void link_check_ready(tern_link *l);
void link_maybe_finalize(tern_link *l);
void link_dl_arm(tern_link *l, uint64_t at_ms);
int link_count_reset(tern_link *l);
void link_linger_check(tern_link *l);
void link_drain_check(tern_link *l);
uint64_t link_now_us(void);

/* link_write.c */
void link_flush(tern_link *l);
int link_ctrl_put(tern_link *l, const uint8_t *frame, size_t len);
int link_ctrl_reset(tern_link *l, uint32_t id, int code, bool retryable);
void link_call_ready(link_call *c);
void link_write_init(tern_link *l);

/* link_calls.c */
link_call *link_call_find(const tern_link *l, uint32_t id);
int link_call_alloc(tern_link *l, bool server, uint32_t id, link_call **out);
void link_call_mark_done(link_call *c, int code, const char *msg, bool retryable);
void link_call_discard(link_call *c);
struct link_route;
const struct link_route *link_router_find(const link_router *r, const char *name);
void link_route_bind(link_call *c, const struct link_route *rt);
void link_call_on_data(link_call *c, const uint8_t *p, size_t n, bool end);
void link_call_on_status(link_call *c, const link_frame *f);
void link_call_on_reset(link_call *c, uint32_t code, uint32_t flags);
void link_calls_reap(tern_link *l);
void link_calls_drain_resumed(tern_link *l);
void link_calls_notify_writable(tern_link *l);
void link_deadline_add(link_call *c);
void link_deadline_fire(tern_link *l);
void link_call_serve(tern_link *l, uint32_t id, const link_frame *f);
void link_call_grow_credit(link_call *c, int64_t delta);

/* link_tls.c */
int link_tls_attach(tern_link *l);
void link_tls_detach(tern_link *l);
int link_tls_on_read(tern_link *l, const uint8_t *data, size_t len);
int link_tls_handshake(tern_link *l);
int link_tls_encrypt(tern_link *l, const uint8_t *plain, size_t n);
size_t link_tls_pending(tern_link *l);
size_t link_tls_take(tern_link *l, uint8_t *out, size_t cap);

/* link.c: frame processing of plaintext bytes */
int link_process(tern_link *l);

#endif
