/* portmux_parse_head against a table of complete, partial and hostile request heads, and every
 * prefix of the complete ones (a head arrives in pieces). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "portmux.h"

#include "tern_assert.h"

struct row {
	const char *in;
	size_t len; /* 0: strlen(in) */
	int want;
	const char *method, *path;
};

#define ROW(s, w, m, p) {s, sizeof(s) - 1, w, m, p}

static const struct row rows[] = {
	ROW("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 1, "GET", "/healthz"),
	ROW("GET /healthz HTTP/1.0\r\n\r\n", 1, "GET", "/healthz"),
	ROW("HEAD /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n", 1, "HEAD", "/metrics"),
	ROW("GET /metrics?name[]=a&b=c HTTP/1.1\r\n\r\n", 1, "GET", "/metrics"),
	ROW("GET /? HTTP/1.1\r\n\r\n", 1, "GET", "/"),
	ROW("GET / HTTP/1.1\r\n\r\nextra body bytes", 1, "GET", "/"),
	ROW("POST /x HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc", 1, "POST", "/x"),
	ROW("GET /x HTTP/1.1\r\nA: b\r\n\r\n\0\x01body", 1, "GET", "/x"), /* found by fuzzing */
	ROW("DELETE /a/b/c HTTP/1.1\r\n\r\n", 1, "DELETE", "/a/b/c"),
	/* partial */
	ROW("", 0, NULL, NULL),
	ROW("G", 0, NULL, NULL),
	ROW("GET", 0, NULL, NULL),
	ROW("GET ", 0, NULL, NULL),
	ROW("GET /healthz", 0, NULL, NULL),
	ROW("GET /healthz ", 0, NULL, NULL),
	ROW("GET /healthz HTTP/1", 0, NULL, NULL),
	ROW("GET /healthz HTTP/1.1", 0, NULL, NULL),
	ROW("GET /healthz HTTP/1.1\r", 0, NULL, NULL),
	ROW("GET /healthz HTTP/1.1\r\n", 0, NULL, NULL),
	ROW("GET /healthz HTTP/1.1\r\nHost: x\r\n", 0, NULL, NULL),
	ROW("GET /healthz HTTP/1.1\r\nHost: x\r\n\r", 0, NULL, NULL),
	/* bad */
	ROW("get /healthz HTTP/1.1\r\n\r\n", -1, NULL, NULL),
	ROW(" GET / HTTP/1.1\r\n\r\n", -1, NULL, NULL),
	ROW("GET  / HTTP/1.1\r\n\r\n", -1, NULL, NULL),
	ROW("GET healthz HTTP/1.1\r\n\r\n", -1, NULL, NULL),
	ROW("GET * HTTP/1.1\r\n\r\n", -1, NULL, NULL),
	ROW("GET http://x/ HTTP/1.1\r\n\r\n", -1, NULL, NULL),
	ROW("GET / HTTP/2.0\r\n\r\n", -1, NULL, NULL),
	ROW("GET / HTTP/1.x\r\n\r\n", -1, NULL, NULL),
	ROW("GET / HTTP/1.1\n\n", -1, NULL, NULL),
	ROW("GET / HTTP/1.1 \r\n\r\n", -1, NULL, NULL),
	ROW("GET / FOO/1.1\r\n\r\n", -1, NULL, NULL),
	ROW("GET /a\tb HTTP/1.1\r\n\r\n", -1, NULL, NULL),
	ROW("GET /a\rb HTTP/1.1\r\n\r\n", -1, NULL, NULL),
	ROW("GET /a\nb HTTP/1.1\r\n\r\n", -1, NULL, NULL),
	ROW("GET /a\x7f HTTP/1.1\r\n\r\n", -1, NULL, NULL),
	ROW("GET /\xc3\xa9 HTTP/1.1\r\n\r\n", -1, NULL, NULL),
	ROW("GET /a\0b HTTP/1.1\r\n\r\n", -1, NULL, NULL),
	ROW("GE\0 / HTTP/1.1\r\n\r\n", -1, NULL, NULL),
	ROW("GET / HTTP/1.1\r\nHost: a\0b\r\n\r\n", -1, NULL, NULL),
	ROW("\0\0\0\0", -1, NULL, NULL),
	ROW("\x16\x03\x01\x02\x00", -1, NULL, NULL),
	ROW("TERNLK\r\x01", -1, NULL, NULL),
	ROW("ABCDEFGHIJKLMNOPQRSTUVWXYZ / HTTP/1.1\r\n\r\n", -1, NULL, NULL),
	ROW("ABCDEFGHIJKLMNOPQ", -1, NULL, NULL),
	ROW("ABCDEFGHIJKLMNOP", 0, NULL, NULL), /* 16 letters may still be a method */
	ROW("ABCDEFGHIJKLMNOP /x HTTP/1.1\r\n\r\n", 1, "ABCDEFGHIJKLMNOP", "/x"),
	ROW("\r\n\r\n", -1, NULL, NULL),
};

static void check_row(const struct row *r)
{
	const char *m = NULL, *p = NULL;
	size_t ml = 0, pl = 0;
	int got = portmux_parse_head(r->in, r->len, &m, &ml, &p, &pl);
	if (got != r->want)
		fprintf(stderr, "row \"%.*s\": got %d want %d\n", (int)r->len, r->in, got, r->want);
	ASSERT(got == r->want);
	if (got != 1)
		return;
	ASSERT(ml == strlen(r->method) && memcmp(m, r->method, ml) == 0);
	ASSERT(pl == strlen(r->path) && memcmp(p, r->path, pl) == 0);
	ASSERT(m >= r->in && p >= r->in && p + pl <= r->in + r->len);
}

static void table(void **state)
{
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		check_row(&rows[i]);
}

/* Every strict prefix of a complete head needs more bytes, or is already known bad for a bad
 * one; a verdict never changes with more bytes. */
static void prefixes(void **state)
{
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		const struct row *r = &rows[i];
		int seen_bad = 0, seen_ok = 0;
		for (size_t n = 0; n <= r->len; n++) {
			const char *m, *p;
			size_t ml, pl;
			int got = portmux_parse_head(r->in, n, &m, &ml, &p, &pl);
			/* the buffer is copied so that reading past n would be caught by ASan */
			char *copy = malloc(n ? n : 1);
			ASSERT(copy);
			memcpy(copy, r->in, n);
			ASSERT(portmux_parse_head(copy, n, &m, &ml, &p, &pl) == got);
			free(copy);
			if (seen_bad)
				ASSERT(got == -1);
			if (got == -1)
				seen_bad = 1;
			if (seen_ok) /* bytes after the head do not matter */
				ASSERT(got == 1);
			else if (got == 1) /* complete exactly at the blank line */
				ASSERT(n >= 4 && memcmp(r->in + n - 4, "\r\n\r\n", 4) == 0);
			if (got == 1)
				seen_ok = 1;
			if (r->want != -1)
				ASSERT(got != -1);
		}
	}
}

/* Long lines: a long target is fine for the parser (the mux bounds the buffer), a long method is
 * not HTTP, and many header lines are skipped. */
static void long_lines(void **state)
{
	size_t cap = 64 * 1024;
	char *b = malloc(cap);
	ASSERT(b);
	const char *m, *p;
	size_t ml, pl;
	int n = snprintf(b, cap, "GET /");
	memset(b + n, 'a', 20000);
	n += 20000;
	n += snprintf(b + n, cap - (size_t)n, "?%s HTTP/1.1\r\n", "q=1");
	for (int i = 0; i < 1000; i++)
		n += snprintf(b + n, cap - (size_t)n, "X-H%d: v\r\n", i);
	ASSERT(portmux_parse_head(b, (size_t)n, &m, &ml, &p, &pl) == 0);
	n += snprintf(b + n, cap - (size_t)n, "\r\n");
	ASSERT(portmux_parse_head(b, (size_t)n, &m, &ml, &p, &pl) == 1);
	ASSERT(ml == 3 && pl == 20001 && p[0] == '/' && p[20000] == 'a');
	memset(b, 'G', cap);
	ASSERT(portmux_parse_head(b, cap, &m, &ml, &p, &pl) == -1);
	memset(b, ' ', cap);
	ASSERT(portmux_parse_head(b, cap, &m, &ml, &p, &pl) == -1);
	memcpy(b, "GET /", 5);
	memset(b + 5, '/', cap - 5);
	ASSERT(portmux_parse_head(b, cap, &m, &ml, &p, &pl) == 0);
	free(b);
}

/* Every single byte value in each position of a short head never crashes and control bytes in
 * the request line are refused. */
static void every_byte(void **state)
{
	const char base[] = "GET /a HTTP/1.1\r\n\r\n";
	size_t len = sizeof(base) - 1;
	char b[sizeof(base)];
	for (size_t pos = 0; pos < 15; pos++) {
		for (int v = 0; v < 256; v++) {
			const char *m, *p;
			size_t ml, pl;
			memcpy(b, base, len);
			b[pos] = (char)v;
			int got = portmux_parse_head(b, len, &m, &ml, &p, &pl);
			if (v < 0x20 || v == 0x7f)
				ASSERT(got == -1);
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(table),
		cmocka_unit_test(prefixes),
		cmocka_unit_test(long_lines),
		cmocka_unit_test(every_byte),
	};
	return cmocka_run_group_tests_name("portmux_parse_head", tests, NULL, NULL);
}
