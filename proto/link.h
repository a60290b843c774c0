/* The link: one TCP (optionally TLS) connection carrying many concurrent calls in both directions,
 * with per-stream and per-link flow control, a fair prioritised writer, heartbeats, drain and
 * redial. This header and link_call.h are the whole API; the wire format is in link_frame.h and
 * every limit in link_limits.h.
 *
 * Errors: functions return 0 or a negative errno value (-EINVAL bad argument, -ENOMEM, -EAGAIN
 * back pressure or stream cap reached, -ESHUTDOWN link closing or drained, -ENOTCONN ...).
 * Threads: a link and everything on it belong to one uv loop; no call is thread-safe.
 * Callbacks never run from inside the call that started them; after a failed call they never run.
 * Lifetime: a link frees itself after its on_close callback returns (two-phase: link_close stops
 * I/O, the memory goes once libuv has closed every handle and every call got its on_done). */
#ifndef TERN_LINK_H
#define TERN_LINK_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "link_limits.h"

typedef struct tern_link tern_link; /* not "link": POSIX owns link(2) */
typedef struct link_call link_call;
typedef struct link_router link_router;
typedef struct link_tls link_tls;
typedef struct link_listener link_listener;
typedef struct link_dialer link_dialer;
typedef struct link_interceptor link_interceptor;

/* Call status codes: gRPC's 0..16. */
enum link_code {
  LINK_OK = 0,
  LINK_CANCELLED = 1,
  LINK_UNKNOWN = 2,
  LINK_INVALID_ARGUMENT = 3,
  LINK_DEADLINE_EXCEEDED = 4,
  LINK_NOT_FOUND = 5,
  LINK_ALREADY_EXISTS = 6,
  LINK_PERMISSION_DENIED = 7,
  LINK_RESOURCE_EXHAUSTED = 8,
  LINK_FAILED_PRECONDITION = 9,
  LINK_ABORTED = 10,
  LINK_OUT_OF_RANGE = 11,
  LINK_UNIMPLEMENTED = 12,
  LINK_INTERNAL = 13,
  LINK_UNAVAILABLE = 14,
  LINK_DATA_LOSS = 15,
  LINK_UNAUTHENTICATED = 16,
};

/* The end of a call or of a link. message and detail are borrowed: valid during the callback. */
typedef struct link_status {
  int code;           /* enum link_code */
  int retryable;      /* 1: the call was not processed (or the link died); retry, elsewhere */
  const char *message;
  const uint8_t *detail; /* structured detail encoded by the service, may be NULL */
  size_t detail_len;
} link_status;

/* Returns the constant name of a code ("OK", "UNAVAILABLE"...). */
const char *link_code_name(int code);

enum link_plane { LINK_PLANE_ANY = 0, LINK_PLANE_CONTROL = 1, LINK_PLANE_DATA = 2 };

/* Everything a link is created with. Zero fields take the defaults of link_limits.h; values out
 * of their MIN..MAX range make link creation fail with -EINVAL. The config is copied; pointers
 * in it (router, tls, interceptors, strings) are borrowed and must outlive the link. */
typedef struct link_config {
  const char *node_id;          /* sent in our settings (hello) */
  const char *region;
  int plane;                    /* enum link_plane */
  const link_router *router;    /* serves calls the peer opens; NULL refuses them (UNIMPLEMENTED) */
  link_tls *tls;                /* NULL: plain TCP */
  const char *server_name;      /* dialer with TLS: name the peer's certificate must hold */
  uint32_t max_streams;         /* concurrent streams we accept from the peer */
  uint32_t stream_window;       /* our per-stream receive window, bytes */
  uint32_t link_window;         /* our per-link receive window, bytes */
  uint32_t max_message;         /* largest message we accept, bytes (<= stream_window - 4) */
  uint32_t stream_sendbuf;      /* bytes a call may queue before link_call_send says -EAGAIN */
  uint32_t ping_interval_ms;
  uint32_t dead_after;          /* intervals without a byte read before the link is dead */
  uint32_t handshake_timeout_ms;
  uint32_t resets_per_s;        /* peer resets/refusals per second tolerated */
  uint32_t sockbuf_bytes;       /* SO_SNDBUF and SO_RCVBUF of the socket; 0 = kernel autotuning.
                                   Small buffers keep pings fast behind bulk data (control
                                   links), large ones keep long paths busy (data links). */
  uint32_t listener_max_links;  /* link_listen: links held at once (0: default); above, refused */
  const link_interceptor *interceptors; /* run in order on every call, both sides */
  size_t interceptor_count;     /* <= LINK_MAX_INTERCEPTORS */
  /* Called once when the preface and both settings are through: the link is up. */
  void (*on_ready)(tern_link *l, void *ud);
  /* Called once when the peer sent goaway: no new calls on this link; go elsewhere. */
  void (*on_goaway)(tern_link *l, const link_status *st, void *ud);
  /* Called on each pong with the round trip in microseconds. */
  void (*on_rtt)(tern_link *l, uint64_t rtt_us, void *ud);
  /* Called exactly once, last: every call has had its on_done. The link is freed on return. */
  void (*on_close)(tern_link *l, const link_status *st, void *ud);
  void *ud;
} link_config;

/* The peer's hello, valid once on_ready ran and until on_close returns. */
typedef struct link_peer_info {
  const char *node_id;
  const char *region;
  int plane;
  uint32_t max_streams, stream_window, link_window, max_message, ping_interval_ms;
} link_peer_info;

/* Counters since the link was created. */
typedef struct link_stats {
  uint64_t bytes_in, bytes_out, frames_in, frames_out, writes;
  uint64_t calls_out, calls_in, calls_refused;
  uint64_t pings, rtt_us_last, rtt_us_min, rtt_us_max;
  uint32_t streams_active;
} link_stats;

/* Dials host:port (an IPv4 or IPv6 address, or a name resolved with uv_getaddrinfo off the
 * loop: its first IPv4 address is used, else its first address). On success *out is the link (not yet
 * connected: calls may be started at once and are sent when it is) and cfg->on_close will run
 * exactly once. On failure nothing was created and no callback runs. */
int link_dial(uv_loop_t *loop, const link_config *cfg, const char *host, int port, tern_link **out);

/* Stops the link now: every call ends with UNAVAILABLE (retryable), I/O stops, on_close follows
 * later with st (NULL: UNAVAILABLE "closed locally"). Idempotent. */
void link_close(tern_link *l, const link_status *st);

/* Graceful drain (gRPC A9): goaway with the highest id, a ping, then after its pong a goaway
 * with the last stream we accepted. Calls in flight finish; the peer's later calls fail as
 * retryable without being processed; our own new calls are refused (-ESHUTDOWN). The tern_link
 * closes itself (on_close with OK) when no call remains. Idempotent. */
void link_drain(tern_link *l);

/* Whether the link is up (ready, not closing, no goaway either way): new calls will be sent. */
int link_is_usable(const tern_link *l);
/* The peer's settings; NULL before on_ready. */
const link_peer_info *link_peer(const tern_link *l);
void link_get_stats(const tern_link *l, link_stats *out);
/* Queues a ping now (besides the periodic ones); the pong reaches on_rtt. 0, -EBUSY while a
 * ping is outstanding, or -ESHUTDOWN when the link is not up. */
int link_ping(tern_link *l);
/* The ud of the link's config. */
void *link_ud(const tern_link *l);
uv_loop_t *link_loop(const tern_link *l);

/* Takes over a connected TCP socket as the accepting side of a link: for a listener that serves
 * several protocols on one port and told this connection is a link from its first bytes
 * (link_preface_check, or a TLS ClientHello when cfg->tls is set). first[0..first_len) are the
 * bytes it already read (at most 64 KiB); the link processes them as if just received, from the
 * loop, never inside this call. On success the link owns sock and cfg->on_close will run; on
 * failure the caller still owns sock. */
int link_adopt(uv_loop_t *loop, const link_config *cfg, uv_os_sock_t sock, const uint8_t *first,
               size_t first_len, tern_link **out);

/* Listener: accepts links on host:port (port 0 picks one). Each accepted link uses *cfg (copied;
 * its ud is passed to callbacks) and is handed to on_link once created (before it is ready).
 * The listener closes the links it accepted when it closes. */
typedef void (*link_on_link)(link_listener *lst, tern_link *l, void *ud);
int link_listen(uv_loop_t *loop, const link_config *cfg, const char *host, int port,
                link_on_link on_link, void *ud, link_listener **out);
/* The bound port. */
int link_listener_port(const link_listener *lst);
/* Links held now, and connections refused so far because listener_max_links was reached. */
uint32_t link_listener_links(const link_listener *lst);
uint32_t link_listener_refused(const link_listener *lst);
/* Stops accepting, closes every link it accepted; frees itself once they and its socket closed,
 * then calls on_closed (may be NULL). Idempotent. */
void link_listener_close(link_listener *lst, void (*on_closed)(void *ud), void *ud);

/* Dialer: keeps one usable link to host:port. When the link dies or receives goaway it dials
 * again, with exponential backoff and jitter after failures (delay = base * 2^(failures-1) capped at
 * max, then uniform in [delay/2, delay]); a link that reached ready resets the backoff. */
typedef struct link_dialer_opts {
  uint32_t backoff_base_ms; /* 0: LINK_BACKOFF_BASE_MS_DEFAULT */
  uint32_t backoff_max_ms;  /* 0: LINK_BACKOFF_MAX_MS_DEFAULT */
  /* A new link is ready (previous ones are closing or draining). */
  void (*on_up)(link_dialer *d, tern_link *l, void *ud);
  /* The current link went away (st says why); a redial is scheduled after delay_ms. */
  void (*on_down)(link_dialer *d, const link_status *st, uint32_t delay_ms, void *ud);
  void *ud;
} link_dialer_opts;

int link_dialer_start(uv_loop_t *loop, const link_config *cfg, const char *host, int port,
                      const link_dialer_opts *opts, link_dialer **out);
/* The current usable link, or NULL while (re)dialing. */
tern_link *link_dialer_link(const link_dialer *d);
/* Dial attempts so far (connects started). */
uint32_t link_dialer_attempts(const link_dialer *d);
/* Stops redialing, closes its links, frees itself once they closed, then on_closed (may be
 * NULL). No dialer callback runs after this call. Idempotent. */
void link_dialer_stop(link_dialer *d, void (*on_closed)(void *ud), void *ud);

/* TLS: one context per role, shared by many links. Files are PEM. With ca_file set the peer's
 * certificate is verified against it; require_peer_cert on a server asks for and requires a
 * client certificate (mutual authentication). ALPN "tern/1" is offered and required. */
typedef struct link_tls_opts {
  int server;               /* 1: accepting side */
  const char *cert_file;    /* our certificate chain (required on servers) */
  const char *key_file;
  const char *ca_file;      /* trust anchors for the peer; NULL: no verification */
  int require_peer_cert;
} link_tls_opts;

/* Creates a TLS context. On failure *out is untouched and returns -EINVAL (bad files) or
 * -ENOMEM. */
int link_tls_new(const link_tls_opts *opts, link_tls **out);
/* Frees the context; links using it must be closed first. */
void link_tls_free(link_tls *tls);
/* The subject of the peer's verified certificate (one line), or "" when none; copied into buf. */
int link_peer_subject(const tern_link *l, char *buf, size_t len);

#endif
