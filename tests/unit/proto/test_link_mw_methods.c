/* Per-method link metrics: calls that succeed and fail on both sides land in their (side,
 * method) rows, a full table counts overflow, and the Prometheus text parses: every line a
 * comment or `name{labels} value`, each HELP/TYPE once, buckets cumulative, _count = calls. */
#include <ctype.h>
#include <string.h>

#include "helpers.h"

static const link_mw_method_row *find_row(const link_mw_methods *m, const char *method,
                                          int server) {
  for (size_t i = 0; i < m->n; i++)
    if (m->rows[i].server == server && strcmp(m->rows[i].method, method) == 0) return &m->rows[i];
  return NULL;
}

static void unary_call(fx *f, uint64_t id, uint32_t count, int want_code) {
  cstate cs = {0};
  Tern__Link__Echo req = TERN__LINK__ECHO__INIT;
  req.id = id;
  req.count = count; /* 3: the handler fails the call with NOT_FOUND */
  ASSERT(link_unary(f->cli, DIAG, "Unary", &req.base, NULL, cstate_unary_done, &cs) == 0);
  ASSERT(fx_run_until(f, &cs.done, 5000));
  ASSERT(cs.code == want_code);
}

static void stream_call(fx *f, uint32_t count) {
  cstate cs = {0};
  link_call *c;
  Tern__Link__Echo req = TERN__LINK__ECHO__INIT;
  req.count = count;
  req.data.data = (uint8_t *)"s";
  req.data.len = 1;
  ASSERT(link_call_start(f->cli, DIAG, "ServerStream", NULL, &cstate_cbs, &cs, &c) == 0);
  ASSERT(link_call_send(c, &req.base) == 0);
  ASSERT(link_call_close_send(c) == 0);
  ASSERT(fx_run_until(f, &cs.done, 5000));
  ASSERT(cs.code == LINK_OK && cs.msgs == count);
}

/* ---- a small Prometheus text checker ---- */

typedef struct series {
  char labels[256]; /* the labels without le */
  double last_bucket, inf, count;
  int buckets, has_inf, has_count, has_sum;
} series;

typedef struct promcheck {
  int help_calls, type_calls, help_secs, type_secs;
  int lines;
  series s[2 * LINK_MW_METHODS_MAX + 4];
  size_t ns;
  double calls_total;
} promcheck;

static series *series_for(promcheck *p, const char *labels) {
  for (size_t i = 0; i < p->ns; i++)
    if (strcmp(p->s[i].labels, labels) == 0) return &p->s[i];
  ASSERT(p->ns < sizeof(p->s) / sizeof(p->s[0]));
  series *s = &p->s[p->ns++];
  memset(s, 0, sizeof(*s));
  snprintf(s->labels, sizeof(s->labels), "%s", labels);
  return s;
}

/* Parses `{k="v",...}` at *pp; copies the labels other than le into rest and le's value into le.
 * Returns 0, or -1 when malformed. */
static int parse_labels(const char **pp, char *rest, size_t rest_len, char *le, size_t le_len) {
  const char *p = *pp;
  size_t rn = 0;
  rest[0] = 0;
  le[0] = 0;
  if (*p != '{') return 0;
  p++;
  while (*p != '}') {
    const char *k = p;
    if (!(isalpha((unsigned char)*p) || *p == '_')) return -1;
    while (isalnum((unsigned char)*p) || *p == '_') p++;
    size_t klen = (size_t)(p - k);
    if (*p++ != '=' || *p++ != '"') return -1;
    const char *v = p;
    while (*p && *p != '"') {
      if (*p == '\\') {
        if (!p[1]) return -1;
        p++;
      }
      p++;
    }
    if (*p != '"') return -1;
    size_t vlen = (size_t)(p - v);
    p++;
    if (klen == 2 && memcmp(k, "le", 2) == 0) {
      if (vlen >= le_len) return -1;
      memcpy(le, v, vlen);
      le[vlen] = 0;
    } else {
      int n = snprintf(rest + rn, rest_len - rn, "%.*s=\"%.*s\",", (int)klen, k, (int)vlen, v);
      if (n < 0 || (size_t)n >= rest_len - rn) return -1;
      rn += (size_t)n;
    }
    if (*p == ',') p++;
    else if (*p != '}') return -1;
  }
  *pp = p + 1;
  return 0;
}

static void prom_line(promcheck *pc, const char *line) {
  pc->lines++;
  if (line[0] == '#') {
    ASSERT(strncmp(line, "# HELP ", 7) == 0 || strncmp(line, "# TYPE ", 7) == 0);
    if (strncmp(line, "# HELP tern_link_calls_total ", 29) == 0) pc->help_calls++;
    if (strcmp(line, "# TYPE tern_link_calls_total counter") == 0) pc->type_calls++;
    if (strncmp(line, "# HELP tern_link_call_seconds ", 30) == 0) pc->help_secs++;
    if (strcmp(line, "# TYPE tern_link_call_seconds histogram") == 0) pc->type_secs++;
    return;
  }
  const char *p = line;
  char name[128];
  size_t n = 0;
  ASSERT(isalpha((unsigned char)*p) || *p == '_' || *p == ':');
  while ((isalnum((unsigned char)*p) || *p == '_' || *p == ':') && n + 1 < sizeof(name))
    name[n++] = *p++;
  name[n] = 0;
  char labels[256], le[64];
  ASSERT(parse_labels(&p, labels, sizeof(labels), le, sizeof(le)) == 0);
  ASSERT(*p == ' ');
  p++;
  char *end;
  double v = strtod(p, &end);
  ASSERT(end != p && *end == 0);
  if (strcmp(name, "tern_link_calls_total") == 0) {
    ASSERT(strstr(labels, "code=\""));
    pc->calls_total += v;
    return;
  }
  if (strncmp(name, "tern_link_call_seconds", 22) != 0) return;
  series *s = series_for(pc, labels);
  if (strcmp(name, "tern_link_call_seconds_bucket") == 0) {
    ASSERT(le[0]);
    ASSERT(!s->has_inf); /* +Inf comes last */
    ASSERT(v >= s->last_bucket);
    s->last_bucket = v;
    if (strcmp(le, "+Inf") == 0) {
      s->has_inf = 1;
      s->inf = v;
    } else {
      char *e;
      ASSERT(strtod(le, &e) > 0 && *e == 0);
      s->buckets++;
    }
  } else if (strcmp(name, "tern_link_call_seconds_sum") == 0) {
    ASSERT(!le[0] && v >= 0);
    s->has_sum = 1;
  } else if (strcmp(name, "tern_link_call_seconds_count") == 0) {
    ASSERT(!le[0]);
    s->has_count = 1;
    s->count = v;
  } else {
    ASSERT(!"unknown tern_link_call_seconds series");
  }
}

/* Writes m as Prometheus text and checks it against the rows. */
static void prom_check(const link_mw_methods *m) {
  FILE *f = tmpfile();
  ASSERT(f);
  link_mw_methods_write(m, f);
  rewind(f);
  promcheck *pc = calloc(1, sizeof(*pc));
  ASSERT(pc);
  char line[1024];
  while (fgets(line, sizeof(line), f)) {
    size_t n = strlen(line);
    ASSERT(n > 0 && line[n - 1] == '\n');
    line[n - 1] = 0;
    prom_line(pc, line);
  }
  fclose(f);
  ASSERT(pc->help_calls == 1 && pc->type_calls == 1 && pc->help_secs == 1 && pc->type_secs == 1);
  ASSERT(pc->ns == m->n);
  double calls = 0;
  for (size_t i = 0; i < m->n; i++) {
    const link_mw_method_row *r = &m->rows[i];
    char labels[256];
    snprintf(labels, sizeof(labels), "side=\"%s\",method=\"%s\",", r->server ? "server" : "client",
             r->method);
    series *s = series_for(pc, labels);
    ASSERT(s->buckets == 31 && s->has_inf && s->has_sum && s->has_count);
    ASSERT(s->count == (double)r->calls && s->inf == (double)r->calls);
    calls += (double)r->calls;
  }
  ASSERT(pc->calls_total == calls);
  free(pc);
}

static void methods(void **state) {
  fx f;
  fx_init(&f, 0);
  static link_mw_methods cm, sm;
  memset(&cm, 0, sizeof(cm));
  memset(&sm, 0, sizeof(sm));
  link_interceptor ci = link_mw_methods_interceptor(&cm);
  link_interceptor si = link_mw_methods_interceptor(&sm);
  f.ccfg.interceptors = &ci;
  f.ccfg.interceptor_count = 1;
  f.scfg.interceptors = &si;
  f.scfg.interceptor_count = 1;
  fx_start(&f);
  prom_check(&cm); /* empty: headers only */
  for (int i = 0; i < 7; i++) unary_call(&f, (uint64_t)i, 0, LINK_OK);
  for (int i = 0; i < 3; i++) unary_call(&f, (uint64_t)i, 3, LINK_NOT_FOUND);
  for (int i = 0; i < 2; i++) stream_call(&f, 5);
  ASSERT(fx_run_until_u64(&f, &f.d.done_ok, 9, 5000)); /* the server's on_done ran too */

  const char *unary = "tern.link.LinkDiag/Unary", *ss = "tern.link.LinkDiag/ServerStream";
  const link_mw_method_row *r = find_row(&cm, unary, 0);
  ASSERT(cm.n == 2 && cm.overflow == 0);
  ASSERT(r && r->calls == 10 && r->by_code[LINK_OK] == 7 && r->by_code[LINK_NOT_FOUND] == 3);
  ASSERT(r->md && strcmp(r->md->name, "Unary") == 0);
  uint64_t sum = 0;
  for (int b = 0; b < 32; b++) sum += r->latency_buckets[b];
  ASSERT(sum == 10 && r->latency_us_sum > 0);
  r = find_row(&cm, ss, 0);
  ASSERT(r && r->calls == 2 && r->by_code[LINK_OK] == 2);
  ASSERT(!find_row(&cm, unary, 1)); /* the client served nothing */
  r = find_row(&sm, unary, 1);
  ASSERT(sm.n == 2);
  ASSERT(r && r->calls == 10 && r->by_code[LINK_OK] == 7 && r->by_code[LINK_NOT_FOUND] == 3);
  r = find_row(&sm, ss, 1);
  ASSERT(r && r->calls == 2);
  prom_check(&cm);
  prom_check(&sm);

  /* the text for one call, exactly */
  FILE *out = tmpfile();
  ASSERT(out);
  link_mw_methods_write(&sm, out);
  long len = ftell(out);
  ASSERT(len > 0);
  char *text = calloc(1, (size_t)len + 1);
  ASSERT(text);
  rewind(out);
  ASSERT(fread(text, 1, (size_t)len, out) == (size_t)len);
  fclose(out);
  ASSERT(strstr(text, "tern_link_calls_total{side=\"server\",method=\"tern.link.LinkDiag/Unary\","
                      "code=\"OK\"} 7\n"));
  ASSERT(strstr(text, "tern_link_calls_total{side=\"server\",method=\"tern.link.LinkDiag/Unary\","
                      "code=\"NOT_FOUND\"} 3\n"));
  ASSERT(!strstr(text, "code=\"CANCELLED\"")); /* only codes seen */
  ASSERT(strstr(text, "tern_link_call_seconds_bucket{side=\"server\",method=\"tern.link.LinkDiag/"
                      "ServerStream\",le=\"+Inf\"} 2\n"));
  ASSERT(strstr(text, "le=\"1e-06\""));
  ASSERT(strstr(text, "tern_link_call_seconds_count{side=\"server\",method=\"tern.link.LinkDiag/"
                      "Unary\"} 10\n"));
  free(text);

  /* a full table: new methods count as overflow, known ones still count */
  static const ProtobufCMethodDescriptor fake[LINK_MW_METHODS_MAX];
  for (size_t i = cm.n; i < LINK_MW_METHODS_MAX; i++) {
    cm.rows[i].md = &fake[i];
    snprintf(cm.rows[i].method, sizeof(cm.rows[i].method), "test.Fake/M%zu", i);
  }
  cm.n = LINK_MW_METHODS_MAX;
  stream_call(&f, 1);
  unary_call(&f, 1, 0, LINK_OK);
  cstate cs = {0};
  Tern__Link__Echo req = TERN__LINK__ECHO__INIT;
  ASSERT(link_unary(f.cli, DIAG, "ClientStream", &req.base, NULL, cstate_unary_done, &cs) == 0);
  ASSERT(fx_run_until(&f, &cs.done, 5000) && cs.code == LINK_OK);
  ASSERT(cm.overflow == 1 && cm.n == LINK_MW_METHODS_MAX);
  ASSERT(find_row(&cm, ss, 0)->calls == 3 && find_row(&cm, unary, 0)->calls == 11);
  ASSERT(sm.n == 3 && sm.overflow == 0);
  prom_check(&cm);
  fx_finish(&f);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(methods)};
  return cmocka_run_group_tests_name("link per-method metrics", tests, NULL, NULL);
}
