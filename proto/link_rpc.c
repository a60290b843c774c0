/* The API half of calls (link_call.h): router, starting calls, sending, ending, unary. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "link_internal.h"


struct link_route {
  const ProtobufCServiceDescriptor *svc;
  const ProtobufCMethodDescriptor *m;
  const link_call_cbs *cbs;
  void *ud;
  uint32_t hash;
  char name[LINK_METHOD_MAX + 1];
};

struct link_router {
  size_t n;
  struct link_route routes[LINK_ROUTER_MAX_METHODS];
};

static uint32_t fnv1a(const char *s) {
  uint32_t h = 2166136261u;
  while (*s) h = (h ^ (uint8_t)*s++) * 16777619u;
  return h;
}

int link_router_new(link_router **out) {
  link_router *r = calloc(1, sizeof(*r));
  if (!r) return -ENOMEM;
  *out = r;
  return 0;
}

void link_router_free(link_router *r) { free(r); }

const struct link_route *link_router_find(const link_router *r, const char *name) {
  uint32_t h = fnv1a(name);
  for (size_t i = 0; i < r->n; i++)
    if (r->routes[i].hash == h && strcmp(r->routes[i].name, name) == 0) return &r->routes[i];
  return NULL;
}

int link_router_add(link_router *r, const ProtobufCServiceDescriptor *svc, const char *method,
                    const link_call_cbs *cbs, void *ud) {
  if (!r || !svc || !method || !cbs) return -EINVAL;
  const ProtobufCMethodDescriptor *m = protobuf_c_service_descriptor_get_method_by_name(svc, method);
  if (!m) return -ENOENT;
  if (r->n >= LINK_ROUTER_MAX_METHODS) return -ENOSPC;
  struct link_route *rt = &r->routes[r->n];
  int len = snprintf(rt->name, sizeof(rt->name), "%s/%s", svc->name, m->name);
  if (len < 0 || (size_t)len > LINK_METHOD_MAX) return -EINVAL;
  if (link_router_find(r, rt->name)) return -EEXIST;
  rt->svc = svc;
  rt->m = m;
  rt->cbs = cbs;
  rt->ud = ud;
  rt->hash = fnv1a(rt->name);
  r->n++;
  return 0;
}

void link_route_bind(link_call *c, const struct link_route *rt) {
  c->svc = rt->svc;
  c->method = rt->m;
  c->cbs = rt->cbs;
  c->ud = rt->ud;
}

/* Makes room for extra more bytes after [soff, slen). */
static int sbuf_reserve(link_call *c, size_t extra) {
  if (c->slen + extra <= c->scap) return 0;
  size_t live = c->slen - c->soff;
  if (c->soff && live + extra <= c->scap) {
    memmove(c->sbuf, c->sbuf + c->soff, live);
    if (c->status_queued) c->status_at -= c->soff;
    c->slen = live;
    c->soff = 0;
    return 0;
  }
  size_t cap = c->scap * 2;
  while (cap < live + extra) cap *= 2;
  uint8_t *nb = malloc(cap);
  if (!nb) return -ENOMEM;
  memcpy(nb, c->sbuf + c->soff, live);
  if (c->status_queued) c->status_at -= c->soff;
  if (c->sbuf != c->inl) free(c->sbuf);
  c->sbuf = nb;
  c->scap = cap;
  c->slen = live;
  c->soff = 0;
  return 0;
}

static int encode_header(link_call *c, const char *full, uint64_t timeout_us,
                         const link_call_opts *o) {
  Tern__Link__CallHeader h = TERN__LINK__CALL_HEADER__INIT;
  Tern__Link__Metadata md[LINK_METADATA_MAX], *mdp[LINK_METADATA_MAX];
  size_t n_md = o ? o->md_count : 0;
  if (n_md > LINK_METADATA_MAX) return -EINVAL;
  h.method = (char *)full;
  h.timeout_us = timeout_us;
  h.trace_id = c->trace_id;
  for (size_t i = 0; i < n_md; i++) {
    tern__link__metadata__init(&md[i]);
    md[i].key = (char *)o->md[i].key;
    md[i].value.data = (uint8_t *)o->md[i].value;
    md[i].value.len = o->md[i].value_len;
    mdp[i] = &md[i];
  }
  h.n_metadata = n_md;
  h.metadata = mdp;
  size_t size = tern__link__call_header__get_packed_size(&h);
  if (size > LINK_MAX_FRAME_BYTES) return -EMSGSIZE;
  int rc = sbuf_reserve(c, size);
  if (rc < 0) return rc;
  tern__link__call_header__pack(&h, c->sbuf);
  c->hdr_len = c->slen = size;
  return 0;
}

static int resolve_timeout(const link_call_opts *o, uint64_t *timeout_us) {
  uint64_t t = o ? o->timeout_us : 0;
  if (o && o->parent) {
    uint64_t rem = link_call_remaining_us(o->parent);
    if (rem == 0) return -ETIMEDOUT;
    if (rem != UINT64_MAX && (t == 0 || rem < t)) t = rem;
  }
  *timeout_us = t;
  return 0;
}

int link_call_start(tern_link *l, const ProtobufCServiceDescriptor *svc, const char *method,
                    const link_call_opts *o, const link_call_cbs *cbs, void *ud,
                    link_call **out) {
  if (!l || !svc || !method || !cbs || !out) return -EINVAL;
  if (l->closing || l->lingering || l->goaway_rx || l->goaway_sent) return -ESHUTDOWN;
  if (l->next_id > LINK_STREAM_ID_MAX - 2) return -ESHUTDOWN;
  if (l->n_local >= l->peer.max_streams) return -EAGAIN;
  const ProtobufCMethodDescriptor *m = protobuf_c_service_descriptor_get_method_by_name(svc, method);
  if (!m) return -ENOENT;
  char full[LINK_METHOD_MAX + 1];
  size_t sl = strlen(svc->name), ml = strlen(m->name);
  if (sl + 1 + ml > LINK_METHOD_MAX) return -EINVAL;
  memcpy(full, svc->name, sl);
  full[sl] = '/';
  memcpy(full + sl + 1, m->name, ml + 1);
  size_t len = sl + 1 + ml;
  uint64_t timeout_us;
  int rc = resolve_timeout(o, &timeout_us);
  if (rc < 0) return rc;
  link_call *c;
  if ((rc = link_call_alloc(l, false, l->next_id, &c)) < 0) return rc;
  c->svc = svc;
  c->method = m;
  c->cbs = cbs;
  c->ud = ud;
  memcpy(c->method_name, full, len + 1);
  const char *trace = o && o->trace_id ? o->trace_id : o && o->parent ? o->parent->trace_id : "";
  link_strlcpy(c->trace_id, sizeof(c->trace_id), trace);
  c->icpt_started = true;
  for (size_t i = 0; i < l->cfg.interceptor_count; i++) {
    if (l->icpt[i].on_start && l->icpt[i].on_start(c, l->icpt[i].ud)) {
      link_call_discard(c);
      return -EPERM;
    }
  }
  if ((rc = encode_header(c, full, timeout_us, o)) < 0) {
    link_call_discard(c);
    return rc;
  }
  l->next_id += 2;
  l->stats.calls_out++;
  if (timeout_us) {
    c->deadline_ms = uv_now(l->loop) + (timeout_us + 999u) / 1000u;
    link_deadline_add(c);
  }
  link_call_ready(c);
  *out = c;
  return 0;
}

static bool ending(const link_call *c) { return c->done || c->l->closing || c->l->lingering; }

static int check_send(link_call *c, size_t size) {
  if (ending(c)) return -ESHUTDOWN;
  if (c->server ? c->status_queued : c->end_queued) return -EPIPE;
  uint32_t max = c->l->settings_rx ? c->l->peer.max_message : LINK_MAX_MESSAGE_MAX;
  if (size > max) return -EMSGSIZE;
  if (c->slen - c->soff >= c->l->cfg.stream_sendbuf) {
    c->want_writable = true;
    return -EAGAIN;
  }
  return sbuf_reserve(c, 4 + size);
}

int link_call_send(link_call *c, const ProtobufCMessage *msg) {
  if (!c || !msg) return -EINVAL;
  const ProtobufCMessageDescriptor *want = c->server ? c->method->output : c->method->input;
  if (msg->descriptor != want) return -EINVAL;
  size_t size = protobuf_c_message_get_packed_size(msg);
  int rc = check_send(c, size);
  if (rc < 0) return rc;
  link_put_u32(c->sbuf + c->slen, (uint32_t)size);
  protobuf_c_message_pack(msg, c->sbuf + c->slen + 4);
  c->slen += 4 + size;
  link_call_ready(c);
  return 0;
}

int link_call_send_raw(link_call *c, const void *data, size_t len) {
  if (!c || (!data && len)) return -EINVAL;
  int rc = check_send(c, len);
  if (rc < 0) return rc;
  link_put_u32(c->sbuf + c->slen, (uint32_t)len);
  if (len) memcpy(c->sbuf + c->slen + 4, data, len);
  c->slen += 4 + len;
  link_call_ready(c);
  return 0;
}

int link_call_close_send(link_call *c) {
  if (!c || c->server) return -EINVAL;
  if (ending(c)) return -ESHUTDOWN;
  c->end_queued = true;
  link_call_ready(c);
  return 0;
}

int link_call_finish(link_call *c, const link_status *st) {
  if (!c || !c->server || !st) return -EINVAL;
  if (ending(c)) return -ESHUTDOWN;
  if (c->status_queued) return -EPIPE;
  Tern__Link__Status s = TERN__LINK__STATUS__INIT;
  s.code = st->code < 0 || st->code > 16 ? LINK_UNKNOWN : (uint32_t)st->code;
  link_strlcpy(c->st_msg, sizeof(c->st_msg), st->message);
  s.message = c->st_msg;
  s.retryable = st->retryable != 0;
  if (st->detail_len > LINK_STATUS_DETAIL_MAX) return -EMSGSIZE;
  s.detail.data = (uint8_t *)st->detail;
  s.detail.len = st->detail_len;
  size_t size = tern__link__status__get_packed_size(&s);
  int rc = sbuf_reserve(c, size);
  if (rc < 0) return rc;
  c->status_at = c->slen;
  tern__link__status__pack(&s, c->sbuf + c->slen);
  c->slen += size;
  c->status_queued = true;
  c->finished = true;
  c->st_code = (int)s.code;
  c->st_retryable = s.retryable;
  link_call_ready(c);
  return 0;
}

int link_call_reply(link_call *c, const ProtobufCMessage *msg) {
  int rc = link_call_send(c, msg);
  if (rc < 0) return rc;
  link_status ok = {.code = LINK_OK};
  return link_call_finish(c, &ok);
}

int link_call_fail(link_call *c, int code, const char *message, int retryable) {
  link_status st = {.code = code, .message = message, .retryable = retryable};
  return link_call_finish(c, &st);
}

void link_call_cancel(link_call *c) {
  if (!c || c->done) return;
  if (c->hdr_sent && !c->l->closing) link_ctrl_reset(c->l, c->id, LINK_CANCELLED, false);
  link_call_mark_done(c, LINK_CANCELLED, "cancelled", false);
}

void link_call_pause(link_call *c, int paused) {
  if (!c || c->done) return;
  bool was = c->paused;
  c->paused = paused != 0;
  if (was && !c->paused && !lq_linked(&c->pnode)) {
    lq_push(&c->l->resumed, &c->pnode);
    link_kick(c->l);
  }
}

void link_call_set_ud(link_call *c, void *ud) { c->ud = ud; }
void *link_call_ud(const link_call *c) { return c->ud; }
tern_link *link_call_link(const link_call *c) { return c->l; }
const char *link_call_method(const link_call *c) { return c->method_name; }
const ProtobufCMethodDescriptor *link_call_method_desc(const link_call *c) { return c->method; }
int link_call_is_server(const link_call *c) { return c->server; }
const char *link_call_trace_id(const link_call *c) { return c->trace_id; }
const ProtobufCMessage *link_call_last_msg(const link_call *c) { return c->last_msg; }
uint64_t link_call_elapsed_us(const link_call *c) { return link_now_us() - c->start_us; }

uint64_t link_call_remaining_us(const link_call *c) {
  if (!c->deadline_ms) return UINT64_MAX;
  uint64_t now = uv_now(c->l->loop);
  return c->deadline_ms > now ? (c->deadline_ms - now) * 1000u : 0;
}

const void *link_call_md(const link_call *c, const char *key, size_t *len) {
  if (!c->hdr) return NULL;
  for (size_t i = 0; i < c->hdr->n_metadata; i++) {
    const Tern__Link__Metadata *m = c->hdr->metadata[i];
    if (m->key && strcmp(m->key, key) == 0) {
      if (len) *len = m->value.len;
      return m->value.data ? (const void *)m->value.data : (const void *)"";
    }
  }
  return NULL;
}

static const link_call_cbs unary_cbs = {0};

int link_unary(tern_link *l, const ProtobufCServiceDescriptor *svc, const char *method,
               const ProtobufCMessage *req, const link_call_opts *opts, link_unary_cb done,
               void *ud) {
  if (!done || !req) return -EINVAL;
  link_call *c;
  int rc = link_call_start(l, svc, method, opts, &unary_cbs, ud, &c);
  if (rc < 0) return rc;
  c->unary_cb = done;
  if ((rc = link_call_send(c, req)) < 0) {
    link_call_discard(c);
    return rc;
  }
  link_call_close_send(c);
  return 0;
}
