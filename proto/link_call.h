/* Calls on a link: unary, server-streaming, client-streaming and bidirectional, over any method
 * of a service declared in the .proto files. Messages are encoded and decoded generically through
 * protobuf-c's descriptors; no per-method code exists anywhere.
 *
 * A call is a stream. The side that opens it (client) sends HEADERS (method, relative timeout,
 * metadata) then messages, then half-closes; the side that accepts it (server) sends messages and
 * ends the call with a status. Either side may cancel (reset) at any time.
 *
 * Lifetime: a link_call is valid from link_call_start (client) or on_start (server) until its
 * on_done callback returns; on_done runs exactly once, last, and the call is freed after it.
 * Every link_call_* function below is a no-op returning -ESHUTDOWN on a call that is ending. */
#ifndef TERN_LINK_CALL_H
#define TERN_LINK_CALL_H

#include <protobuf-c/protobuf-c.h>
#include <stdio.h>

#include "link.h"

typedef struct link_call_cbs {
  /* Server: a call arrived; method, deadline and metadata are readable. */
  void (*on_start)(link_call *c, void *ud);
  /* A message decoded with the method's input (server) or output (client) descriptor. It stays
   * valid until the next message arrives or the call is done (unary: still readable in on_done
   * through link_call_last_msg). */
  void (*on_msg)(link_call *c, const ProtobufCMessage *msg, void *ud);
  /* Set instead of on_msg to receive undecoded bytes (valid during the callback only). */
  void (*on_raw)(link_call *c, const uint8_t *data, size_t len, void *ud);
  /* The peer half-closed: it sends no more messages. */
  void (*on_half_close)(link_call *c, void *ud);
  /* link_call_send said -EAGAIN and the queue has drained below half. */
  void (*on_writable)(link_call *c, void *ud);
  /* Last callback: the call ended with st (client: the server's status, a reset, a deadline or
   * the link's death; server: the status it sent, or the client's cancel). */
  void (*on_done)(link_call *c, const link_status *st, void *ud);
} link_call_cbs;

typedef struct link_md {
  const char *key;
  const void *value;
  size_t value_len;
} link_md;

typedef struct link_call_opts {
  uint64_t timeout_us;        /* relative deadline, 0 = none (or the parent's) */
  const link_call *parent;    /* a server call this one is made on behalf of: its remaining
                                 deadline caps ours and its trace id is inherited */
  const char *trace_id;       /* NULL: inherited from parent, if any */
  const link_md *md;          /* extra metadata, <= LINK_METADATA_MAX entries */
  size_t md_count;
} link_call_opts;

/* Starts a call of method (by name) of service svc on l. cbs is borrowed (usually static). On
 * success *out is the call and on_done will run exactly once. Fails with -ENOENT (no such
 * method), -ESHUTDOWN (link closing, drained or goaway received: retry elsewhere), -EAGAIN (the
 * peer's concurrent stream limit is reached, taken as LINK_MAX_STREAMS_PROTOCOL until its
 * settings arrive: retry later), -ETIMEDOUT (the parent's deadline has passed), -EPERM (an
 * interceptor refused), -EINVAL, -ENOMEM; then no callback runs. */
int link_call_start(tern_link *l, const ProtobufCServiceDescriptor *svc, const char *method,
                    const link_call_opts *opts, const link_call_cbs *cbs, void *ud,
                    link_call **out);

/* Queues one message (packed now; msg stays the caller's). -EAGAIN when the call's send queue
 * is above its bound (wait for on_writable), -EMSGSIZE above the peer's max message,
 * -EPIPE after half-close or finish. */
int link_call_send(link_call *c, const ProtobufCMessage *msg);
/* Same with bytes already encoded (copied). */
int link_call_send_raw(link_call *c, const void *data, size_t len);
/* Client: no more messages (half-close). Sent after every queued message. */
int link_call_close_send(link_call *c);
/* Server: ends the call with st after every queued message (a status never overtakes data). */
int link_call_finish(link_call *c, const link_status *st);
/* Server: link_call_send(msg) then link_call_finish(OK). */
int link_call_reply(link_call *c, const ProtobufCMessage *msg);
/* Server convenience: finish with code, message and the retryable flag. */
int link_call_fail(link_call *c, int code, const char *message, int retryable);
/* Either side: reset the stream now (jumps ahead of queued data); on_done follows with
 * CANCELLED. Idempotent. */
void link_call_cancel(link_call *c);
/* Stop (1) or resume (0) delivering messages: a stopped reader returns no credit, so its peer
 * stalls on this stream alone. Messages buffered meanwhile are delivered after resume. */
void link_call_pause(link_call *c, int paused);

/* Replaces the ud passed to this call's callbacks (servers attach per-call state in on_start). */
void link_call_set_ud(link_call *c, void *ud);
void *link_call_ud(const link_call *c);
tern_link *link_call_link(const link_call *c);
/* "package.Service/Method". */
const char *link_call_method(const link_call *c);
const ProtobufCMethodDescriptor *link_call_method_desc(const link_call *c);
/* 1 when we accepted the call (server side). */
int link_call_is_server(const link_call *c);
/* Microseconds left before the deadline (0 when passed), or UINT64_MAX without one. */
uint64_t link_call_remaining_us(const link_call *c);
/* Server: the trace id ("" when none) and a metadata value (NULL when absent). */
const char *link_call_trace_id(const link_call *c);
const void *link_call_md(const link_call *c, const char *key, size_t *len);
/* The last message received, NULL if none (valid until the next one / on_done returns). */
const ProtobufCMessage *link_call_last_msg(const link_call *c);
/* Microseconds since the call started. */
uint64_t link_call_elapsed_us(const link_call *c);

/* Unary convenience: starts, sends req, half-closes. done gets the status and, with OK, the
 * decoded response (valid during the callback). Same errors as link_call_start. */
typedef void (*link_unary_cb)(link_call *c, const link_status *st, const ProtobufCMessage *resp,
                              void *ud);
int link_unary(tern_link *l, const ProtobufCServiceDescriptor *svc, const char *method,
               const ProtobufCMessage *req, const link_call_opts *opts, link_unary_cb done,
               void *ud);

/* Router: which method of which service serves an incoming call. Filled before links use it,
 * read-only afterwards (one router may serve many links). */
int link_router_new(link_router **out);
void link_router_free(link_router *r);
/* Serves svc's method with cbs (borrowed) and ud. Returns -ENOENT for an unknown method,
 * -EEXIST when it is already routed, -ENOSPC above LINK_ROUTER_MAX_METHODS. */
int link_router_add(link_router *r, const ProtobufCServiceDescriptor *svc, const char *method,
                    const link_call_cbs *cbs, void *ud);

/* Interceptors run around every call on links whose config lists them, in order, on both sides.
 * on_start (client: before the call is sent; server: before on_start of the handler) returns 0
 * to let the call go on or a link_code to refuse it (client: link_call_start fails -EPERM;
 * server: the call ends with that code). on_done sees every call's final status. */
struct link_interceptor {
  int (*on_start)(link_call *c, void *ud);
  void (*on_done)(link_call *c, const link_status *st, void *ud);
  void *ud;
};

/* Logging interceptor: one line per finished call to out ("link call <side> <method> <code>
 * <us>us trace=<id>"), or only failures when errors_only (not cancels, and not calls ended by
 * their link's death: retryable UNAVAILABLE). */
typedef struct link_mw_log {
  FILE *out;
  int errors_only;
} link_mw_log;
link_interceptor link_mw_log_interceptor(link_mw_log *state);

/* Metrics interceptor: counters and a latency histogram (power-of-two microsecond buckets). */
typedef struct link_mw_metrics {
  uint64_t started, finished, by_code[17], client_calls, server_calls;
  uint64_t latency_us_sum, latency_us_max, latency_buckets[32];
} link_mw_metrics;
link_interceptor link_mw_metrics_interceptor(link_mw_metrics *state);
/* Latency percentile (0..100) from the histogram: an upper bound, in microseconds. */
uint64_t link_mw_metrics_percentile_us(const link_mw_metrics *m, double pct);

/* Per-method metrics: one row per (side, method): calls by status code and a latency histogram.
 * 64 rows hold both sides of every method of the tern services with room to spare; calls of
 * methods past the last row are counted in overflow only. The state is zeroed by its owner and
 * must outlive the links using it. */
#define LINK_MW_METHODS_MAX 64
typedef struct link_mw_method_row {
  const ProtobufCMethodDescriptor *md; /* identity */
  char method[96];                      /* "tern.data.DataPlane/Publish" */
  int server;                           /* 1: calls we served */
  uint64_t calls, by_code[17], latency_us_sum, latency_buckets[32];
} link_mw_method_row;
typedef struct link_mw_methods {
  link_mw_method_row rows[LINK_MW_METHODS_MAX];
  size_t n;
  uint64_t overflow;
} link_mw_methods;
/* Counts every finished call in the row of its (method, side); latency_buckets[b] counts calls
 * of at most 2^b microseconds (the last one: everything longer too). */
link_interceptor link_mw_methods_interceptor(link_mw_methods *state);
/* Prometheus text: tern_link_calls_total{side="client|server",method="...",code="OK"} (only
 * codes seen), tern_link_call_seconds histogram {side,method} with le buckets in seconds (powers
 * of two of µs, cumulative, +Inf, _sum, _count), each HELP/TYPE once. Calls past the last row
 * show as tern_link_calls_untracked_total. */
void link_mw_methods_write(const link_mw_methods *m, FILE *out);

#endif
