/* Built-in interceptors: logging, metrics and per-method metrics. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "link_internal.h"

static void log_done(link_call *c, const link_status *st, void *ud) {
  link_mw_log *s = ud;
  if (!s->out) return;
  /* errors_only: calls that failed on their own; a cancel, or a link that died under the call
   * (retryable UNAVAILABLE: its owner logs the link's death once), is not one. */
  if (s->errors_only && (st->code == LINK_OK || st->code == LINK_CANCELLED ||
                         (st->code == LINK_UNAVAILABLE && st->retryable)))
    return;
  fprintf(s->out, "link call %s %s %s %" PRIu64 "us trace=%s%s%s\n",
          link_call_is_server(c) ? "server" : "client", link_call_method(c),
          link_code_name(st->code), link_call_elapsed_us(c), link_call_trace_id(c),
          st->message && *st->message ? " msg=" : "", st->message ? st->message : "");
}

link_interceptor link_mw_log_interceptor(link_mw_log *state) {
  link_interceptor i = {.on_start = NULL, .on_done = log_done, .ud = state};
  return i;
}

static int metrics_start(link_call *c, void *ud) {
  link_mw_metrics *m = ud;
  m->started++;
  if (link_call_is_server(c))
    m->server_calls++;
  else
    m->client_calls++;
  return 0;
}

static void metrics_done(link_call *c, const link_status *st, void *ud) {
  link_mw_metrics *m = ud;
  uint64_t us = link_call_elapsed_us(c);
  m->finished++;
  if (st->code >= 0 && st->code <= 16) m->by_code[st->code]++;
  m->latency_us_sum += us;
  if (us > m->latency_us_max) m->latency_us_max = us;
  unsigned b = 0;
  while (b < 31 && (1ull << b) < us) b++;
  m->latency_buckets[b]++;
}

link_interceptor link_mw_metrics_interceptor(link_mw_metrics *state) {
  link_interceptor i = {.on_start = metrics_start, .on_done = metrics_done, .ud = state};
  return i;
}

uint64_t link_mw_metrics_percentile_us(const link_mw_metrics *m, double pct) {
  uint64_t total = 0, seen = 0;
  for (int b = 0; b < 32; b++) total += m->latency_buckets[b];
  if (!total) return 0;
  uint64_t want = (uint64_t)((double)total * pct / 100.0);
  if (want == 0) want = 1;
  for (int b = 0; b < 32; b++) {
    seen += m->latency_buckets[b];
    if (seen >= want) return 1ull << b;
  }
  return 1ull << 31;
}

/* ---- per-method metrics ---- */

static unsigned latency_bucket(uint64_t us) {
  unsigned b = 0;
  while (b < 31 && (1ull << b) < us) b++;
  return b;
}

/* The row of (md, side), created on first use; NULL when every row is taken. Calls to a method
 * the router does not know have no descriptor: their rows are told apart by name. */
static link_mw_method_row *method_row(link_mw_methods *m, link_call *c) {
  const ProtobufCMethodDescriptor *md = link_call_method_desc(c);
  const char *name = link_call_method(c);
  int server = link_call_is_server(c);
  if (!name) name = "";
  for (size_t i = 0; i < m->n; i++) {
    link_mw_method_row *r = &m->rows[i];
    if (r->md == md && r->server == server &&
        (md || strncmp(r->method, name, sizeof(r->method) - 1) == 0))
      return r;
  }
  if (m->n == LINK_MW_METHODS_MAX) return NULL;
  link_mw_method_row *r = &m->rows[m->n++];
  memset(r, 0, sizeof(*r));
  r->md = md;
  r->server = server;
  snprintf(r->method, sizeof(r->method), "%s", name);
  return r;
}

static void methods_done(link_call *c, const link_status *st, void *ud) {
  link_mw_methods *m = ud;
  link_mw_method_row *r = method_row(m, c);
  if (!r) {
    m->overflow++;
    return;
  }
  uint64_t us = link_call_elapsed_us(c);
  r->calls++;
  if (st->code >= 0 && st->code <= 16) r->by_code[st->code]++;
  r->latency_us_sum += us;
  r->latency_buckets[latency_bucket(us)]++;
}

link_interceptor link_mw_methods_interceptor(link_mw_methods *state) {
  link_interceptor i = {.on_start = NULL, .on_done = methods_done, .ud = state};
  return i;
}

/* A label value as the exposition format wants it: backslash, quote and newline escaped. */
static void put_label(FILE *out, const char *v) {
  for (; *v; v++) {
    if (*v == '\\' || *v == '"')
      fprintf(out, "\\%c", *v);
    else if (*v == '\n')
      fputs("\\n", out);
    else
      fputc(*v, out);
  }
}

static void put_labels(FILE *out, const link_mw_method_row *r) {
  fprintf(out, "side=\"%s\",method=\"", r->server ? "server" : "client");
  put_label(out, r->method);
  fputc('"', out);
}

void link_mw_methods_write(const link_mw_methods *m, FILE *out) {
  fputs("# HELP tern_link_calls_total Calls finished on links, by side, method and status code.\n"
        "# TYPE tern_link_calls_total counter\n", out);
  for (size_t i = 0; i < m->n; i++) {
    const link_mw_method_row *r = &m->rows[i];
    for (int code = 0; code <= 16; code++) {
      if (!r->by_code[code]) continue;
      fputs("tern_link_calls_total{", out);
      put_labels(out, r);
      fprintf(out, ",code=\"%s\"} %" PRIu64 "\n", link_code_name(code), r->by_code[code]);
    }
  }
  fputs("# HELP tern_link_call_seconds Call latency on links, from start to status, by side and "
        "method.\n# TYPE tern_link_call_seconds histogram\n", out);
  for (size_t i = 0; i < m->n; i++) {
    const link_mw_method_row *r = &m->rows[i];
    uint64_t cum = 0;
    /* bucket 31 also holds everything longer, so it is only part of +Inf */
    for (int b = 0; b < 31; b++) {
      cum += r->latency_buckets[b];
      fputs("tern_link_call_seconds_bucket{", out);
      put_labels(out, r);
      fprintf(out, ",le=\"%.10g\"} %" PRIu64 "\n", (double)(1ull << b) / 1e6, cum);
    }
    fputs("tern_link_call_seconds_bucket{", out);
    put_labels(out, r);
    fprintf(out, ",le=\"+Inf\"} %" PRIu64 "\n", r->calls);
    fputs("tern_link_call_seconds_sum{", out);
    put_labels(out, r);
    fprintf(out, "} %.6f\n", (double)r->latency_us_sum / 1e6);
    fputs("tern_link_call_seconds_count{", out);
    put_labels(out, r);
    fprintf(out, "} %" PRIu64 "\n", r->calls);
  }
  fprintf(out, "# HELP tern_link_calls_untracked_total Calls of methods past the %d rows of the "
          "per-method table.\n# TYPE tern_link_calls_untracked_total counter\n"
          "tern_link_calls_untracked_total %" PRIu64 "\n", LINK_MW_METHODS_MAX, m->overflow);
}
