/* Built-in interceptors: logging and metrics. */
#include <inttypes.h>
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
