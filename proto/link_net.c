/* Getting links: dialing, listening, and the dialer that redials with backoff and jitter. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "link_internal.h"

static int parse_addr(const char *host, int port, struct sockaddr_storage *ss) {
  if (!host || port < 0 || port > 65535) return -EINVAL;
  if (uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0) return 0;
  if (uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0) return 0;
  return -EINVAL;
}

static void on_connect(uv_connect_t *req, int status) {
  tern_link *l = req->data;
  if (l->closing) return;
  if (status < 0) {
    char msg[128];
    snprintf(msg, sizeof(msg), "connect failed: %s", uv_strerror(status));
    link_close_code(l, LINK_UNAVAILABLE, msg, true);
    return;
  }
  link_start_io(l);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res) {
  tern_link *l = req->data;
  l->resolving = false;
  if (l->closing) {
    if (res) uv_freeaddrinfo(res);
    link_maybe_finalize(l);
    return;
  }
  char msg[128];
  int rc = status;
  if (rc == 0) { /* the first IPv4 address, else the first address */
    const struct addrinfo *pick = res;
    for (const struct addrinfo *a = res; a; a = a->ai_next)
      if (a->ai_family == AF_INET) {
        pick = a;
        break;
      }
    rc = uv_tcp_connect(&l->connect_req, &l->tcp, pick->ai_addr, on_connect);
  }
  if (res) uv_freeaddrinfo(res);
  if (rc < 0) {
    snprintf(msg, sizeof(msg), "%s failed: %s", status < 0 ? "resolve" : "connect",
             uv_strerror(rc));
    link_close_code(l, LINK_UNAVAILABLE, msg, true);
  }
}

int link_dial(uv_loop_t *loop, const link_config *cfg, const char *host, int port, tern_link **out) {
  struct sockaddr_storage ss;
  if (!loop || !cfg || !out || !host || !*host || strlen(host) > 253) return -EINVAL;
  if (port <= 0 || port > 65535) return -EINVAL;
  bool numeric = parse_addr(host, port, &ss) == 0;
  tern_link *l;
  int rc = link_create(loop, cfg, true, &l);
  if (rc < 0) return rc;
  if (numeric) {
    rc = uv_tcp_connect(&l->connect_req, &l->tcp, (const struct sockaddr *)&ss, on_connect);
  } else {
    char service[8];
    snprintf(service, sizeof(service), "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    rc = uv_getaddrinfo(loop, &l->gai, on_resolved, host, service, &hints);
    l->resolving = rc == 0;
  }
  if (rc < 0) {
    l->silent = true;
    link_close_code(l, LINK_UNAVAILABLE, "connect failed", true);
    return rc;
  }
  *out = l;
  return 0;
}

int link_adopt(uv_loop_t *loop, const link_config *cfg, uv_os_sock_t sock, const uint8_t *first,
               size_t first_len, tern_link **out) {
  if (!loop || !cfg || !out || (first_len && !first) || first_len > LINK_TLS_READ_BYTES)
    return -EINVAL;
  tern_link *l;
  int rc = link_create(loop, cfg, false, &l);
  if (rc < 0) return rc;
  if ((rc = uv_tcp_open(&l->tcp, sock)) < 0) {
    l->silent = true; /* uv_tcp_open failed before taking the socket: the caller keeps it */
    link_close_code(l, LINK_UNAVAILABLE, "adopt failed", true);
    return rc;
  }
  if (first_len) { /* queued now, processed from the idle callback */
    if (l->ssl) {
      BIO_write(l->rbio, first, (int)first_len);
    } else {
      memcpy(l->rbuf, first, first_len);
      l->rlen = first_len;
    }
    l->adopt_len = first_len;
    link_kick(l);
  }
  link_start_io(l);
  *out = l;
  return 0;
}

/* ---- listener ---- */

struct link_listener {
  uv_loop_t *loop;
  uv_tcp_t tcp;
  link_config cfg;
  link_on_link on_link;
  void *ud;
  lnode links;
  uint32_t n_links, refused;
  bool closing, tcp_closed;
  int port;
  void (*on_closed)(void *ud);
  void *closed_ud;
};

static void listener_maybe_free(link_listener *lst) {
  if (!lst->closing || !lst->tcp_closed || !lq_empty(&lst->links)) return;
  if (lst->on_closed) lst->on_closed(lst->closed_ud);
  free(lst);
}

static void listener_link_gone(tern_link *l, const link_status *st, void *owner) {
  (void)st;
  lq_remove(&l->owner_node);
  ((link_listener *)owner)->n_links--;
  listener_maybe_free(owner);
}

/* Accepts a connection and closes it at once: the backlog must drain even when we refuse. */
static void refuse_connection(link_listener *lst) {
  uv_tcp_t *tmp = malloc(sizeof(*tmp));
  lst->refused++;
  if (tmp && uv_tcp_init(lst->loop, tmp) == 0) {
    uv_accept((uv_stream_t *)&lst->tcp, (uv_stream_t *)tmp);
    uv_close((uv_handle_t *)tmp, (uv_close_cb)free);
  } else {
    free(tmp);
  }
}

static void on_connection(uv_stream_t *server, int status) {
  link_listener *lst = server->data;
  tern_link *l;
  if (status < 0 || lst->closing) return;
  uint32_t max = lst->cfg.listener_max_links ? lst->cfg.listener_max_links
                                             : LINK_LISTENER_MAX_LINKS_DEFAULT;
  if (lst->n_links >= max || link_create(lst->loop, &lst->cfg, false, &l) < 0) {
    refuse_connection(lst);
    return;
  }
  if (uv_accept(server, (uv_stream_t *)&l->tcp) < 0) {
    l->silent = true;
    link_close_code(l, LINK_UNAVAILABLE, "accept failed", true);
    return;
  }
  l->owner = lst;
  l->owner_cb = listener_link_gone;
  lq_push(&lst->links, &l->owner_node);
  lst->n_links++;
  if (lst->on_link) lst->on_link(lst, l, lst->ud);
  if (!l->closing) link_start_io(l);
}

/* A listener that never listened: its handle is closed, then it goes (the handle is not
 * the struct's first member, so free() of the handle would free the wrong address). */
static void free_unlistened(uv_handle_t *h) { free(h->data); }

int link_listen(uv_loop_t *loop, const link_config *cfg, const char *host, int port,
                link_on_link on_link, void *ud, link_listener **out) {
  struct sockaddr_storage ss;
  if (!loop || !cfg || !out) return -EINVAL;
  int rc = parse_addr(host, port, &ss);
  if (rc < 0) return rc;
  link_listener *lst = calloc(1, sizeof(*lst));
  if (!lst) return -ENOMEM;
  lst->loop = loop;
  lst->cfg = *cfg;
  lst->on_link = on_link;
  lst->ud = ud;
  lq_init(&lst->links);
  uv_tcp_init(loop, &lst->tcp);
  lst->tcp.data = lst;
  rc = uv_tcp_bind(&lst->tcp, (const struct sockaddr *)&ss, 0);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&lst->tcp, 511, on_connection);
  if (rc < 0) {
    lst->closing = true;
    uv_close((uv_handle_t *)&lst->tcp, free_unlistened);
    return rc;
  }
  struct sockaddr_storage bound;
  int blen = sizeof(bound);
  uv_tcp_getsockname(&lst->tcp, (struct sockaddr *)&bound, &blen);
  lst->port = bound.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&bound)->sin6_port)
                                          : ntohs(((struct sockaddr_in *)&bound)->sin_port);
  *out = lst;
  return 0;
}

int link_listener_port(const link_listener *lst) { return lst->port; }
uint32_t link_listener_links(const link_listener *lst) { return lst->n_links; }
uint32_t link_listener_refused(const link_listener *lst) { return lst->refused; }

static void on_listener_closed(uv_handle_t *h) {
  link_listener *lst = h->data;
  lst->tcp_closed = true;
  listener_maybe_free(lst);
}

void link_listener_close(link_listener *lst, void (*on_closed)(void *ud), void *ud) {
  if (lst->closing) return;
  lst->closing = true;
  lst->on_closed = on_closed;
  lst->closed_ud = ud;
  uv_close((uv_handle_t *)&lst->tcp, on_listener_closed);
  link_status st = {.code = LINK_UNAVAILABLE, .retryable = 1, .message = "listener closed"};
  for (lnode *n = lst->links.next; n != &lst->links; n = n->next)
    link_close(lq_entry(n, tern_link, owner_node), &st);
}

/* ---- dialer ---- */

struct link_dialer {
  uv_loop_t *loop;
  link_config cfg;
  link_dialer_opts o;
  char host[256];
  int port;
  uv_timer_t timer;
  tern_link *cur;
  lnode links;
  uint32_t failures, attempts;
  uint64_t rng;
  bool stopping, timer_closed;
  void (*on_closed)(void *ud);
  void *closed_ud;
};

static uint64_t xorshift(uint64_t *s) {
  uint64_t x = *s;
  x ^= x << 13;
  x ^= x >> 7;
  x ^= x << 17;
  return *s = x;
}

/* base * 2^(failures-1) capped at max, then uniform in [d/2, d] so dialers do not stampede. */
static uint32_t backoff_ms(link_dialer *d) {
  uint64_t delay = d->o.backoff_base_ms;
  for (uint32_t i = 1; i < d->failures && delay < d->o.backoff_max_ms; i++) delay *= 2;
  if (delay > d->o.backoff_max_ms) delay = d->o.backoff_max_ms;
  uint64_t half = delay / 2;
  return (uint32_t)(half + xorshift(&d->rng) % (delay - half + 1));
}

static void dial_now(link_dialer *d);

static void on_timer(uv_timer_t *t) { dial_now(t->data); }

static void schedule(link_dialer *d, const link_status *st) {
  uint32_t delay = backoff_ms(d);
  if (d->o.on_down) d->o.on_down(d, st, delay, d->o.ud);
  if (!d->stopping) uv_timer_start(&d->timer, on_timer, delay, 0);
}

static void dialer_ready(tern_link *l) {
  link_dialer *d = l->owner;
  d->failures = 0;
  if (d->cur == l && d->o.on_up) d->o.on_up(d, l, d->o.ud);
}

static void dialer_goaway(tern_link *l, const link_status *st) {
  link_dialer *d = l->owner;
  if (d->cur != l || d->stopping) return;
  d->cur = NULL; /* it drains on its own; a fresh link takes over now */
  if (d->o.on_down) d->o.on_down(d, st, 0, d->o.ud);
  if (!d->stopping) uv_timer_start(&d->timer, on_timer, 0, 0);
}

static void dialer_maybe_free(link_dialer *d) {
  if (!d->stopping || !d->timer_closed || !lq_empty(&d->links)) return;
  if (d->on_closed) d->on_closed(d->closed_ud);
  free(d);
}

static void dialer_link_gone(tern_link *l, const link_status *st, void *owner) {
  link_dialer *d = owner;
  lq_remove(&l->owner_node);
  if (d->stopping) {
    dialer_maybe_free(d);
    return;
  }
  if (d->cur != l) return;
  d->cur = NULL;
  if (!l->ready) d->failures++;
  schedule(d, st);
}

static void dial_now(link_dialer *d) {
  tern_link *l;
  if (d->stopping || d->cur) return;
  d->attempts++;
  int rc = link_dial(d->loop, &d->cfg, d->host, d->port, &l);
  if (rc < 0) {
    link_status st = {.code = LINK_UNAVAILABLE, .retryable = 1, .message = uv_strerror(rc)};
    d->failures++;
    schedule(d, &st);
    return;
  }
  l->owner = d;
  l->owner_cb = dialer_link_gone;
  l->own_ready = dialer_ready;
  l->own_goaway = dialer_goaway;
  lq_push(&d->links, &l->owner_node);
  d->cur = l;
}

int link_dialer_start(uv_loop_t *loop, const link_config *cfg, const char *host, int port,
                      const link_dialer_opts *opts, link_dialer **out) {
  if (!loop || !cfg || !out || !host || port <= 0 || port > 65535) return -EINVAL;
  if (!*host || strlen(host) >= sizeof(((link_dialer *)0)->host)) return -EINVAL;
  link_dialer *d = calloc(1, sizeof(*d));
  if (!d) return -ENOMEM;
  d->loop = loop;
  d->cfg = *cfg;
  if (opts) d->o = *opts;
  if (!d->o.backoff_base_ms) d->o.backoff_base_ms = LINK_BACKOFF_BASE_MS_DEFAULT;
  if (!d->o.backoff_max_ms) d->o.backoff_max_ms = LINK_BACKOFF_MAX_MS_DEFAULT;
  if (d->o.backoff_max_ms < d->o.backoff_base_ms) d->o.backoff_max_ms = d->o.backoff_base_ms;
  snprintf(d->host, sizeof(d->host), "%s", host);
  d->port = port;
  d->rng = uv_hrtime() ^ (uint64_t)(uintptr_t)d;
  if (!d->rng) d->rng = 88172645463325252ull;
  lq_init(&d->links);
  uv_timer_init(loop, &d->timer);
  d->timer.data = d;
  dial_now(d);
  *out = d;
  return 0;
}

tern_link *link_dialer_link(const link_dialer *d) {
  return d->cur && link_is_usable(d->cur) ? d->cur : NULL;
}

uint32_t link_dialer_attempts(const link_dialer *d) { return d->attempts; }

static void on_dialer_timer_closed(uv_handle_t *h) {
  link_dialer *d = h->data;
  d->timer_closed = true;
  dialer_maybe_free(d);
}

void link_dialer_stop(link_dialer *d, void (*on_closed)(void *ud), void *ud) {
  if (d->stopping) return;
  d->stopping = true;
  d->on_closed = on_closed;
  d->closed_ud = ud;
  d->cur = NULL;
  uv_close((uv_handle_t *)&d->timer, on_dialer_timer_closed);
  link_status st = {.code = LINK_UNAVAILABLE, .retryable = 1, .message = "dialer stopped"};
  for (lnode *n = d->links.next; n != &d->links; n = n->next)
    link_close(lq_entry(n, tern_link, owner_node), &st);
}
