/* The port multiplexer over real loopback sockets: ops HTTP (GET, HEAD, 404, 405, 400), a link
 * handed to link_adopt carrying a LinkDiag call, silent and garbage peers closed, and the
 * pending-connection cap. Each test ends with a clean loop close. */
#include <string.h>
#include <unistd.h>

#include "helpers.h"
#include "portmux.h"

struct mux_fx {
	fx f;
	struct portmux *m;
	int port, closed, http_calls, links;
};

static void on_http(void *arg, const char *path, size_t path_len, int *status, const char **ctype,
		    char **body, size_t *body_len)
{
	struct mux_fx *t = arg;
	t->http_calls++;
	if (path_len == 8 && memcmp(path, "/healthz", 8) == 0) {
		*status = 200;
		*ctype = "text/plain";
		*body = strdup("ok");
		ASSERT(*body);
		*body_len = 2;
		return;
	}
	*status = 404;
	*ctype = "text/plain";
	*body = NULL;
	*body_len = 0;
}

static int on_link(void *arg, uv_os_sock_t fd, const uint8_t *first, size_t len)
{
	struct mux_fx *t = arg;
	t->links++;
	tern_link *l;
	if (link_adopt(&t->f.loop, &t->f.scfg, fd, first, len, &l) != 0)
		return -1;
	t->f.srv = l;
	return 0;
}

static void mux_start(struct mux_fx *t, uint64_t timeout_ms, unsigned max_pending)
{
	memset(t, 0, sizeof(*t));
	fx_init(&t->f, 0);
	struct portmux_config c = {
		.loop = &t->f.loop,
		.host = "127.0.0.1",
		.port = 0,
		.handshake_timeout_ms = timeout_ms,
		.max_pending = max_pending,
		.on_link = on_link,
		.on_http = on_http,
		.arg = t,
	};
	char why[256] = "";
	ASSERT(portmux_start(&t->m, &c, why, sizeof(why)) == 0);
	t->port = portmux_port(t->m);
	ASSERT(t->port > 0);
}

static void on_mux_closed(void *arg) { ((struct mux_fx *)arg)->closed = 1; }

static void mux_finish(struct mux_fx *t)
{
	portmux_close(t->m, on_mux_closed, t);
	portmux_close(t->m, on_mux_closed, t); /* idempotent */
	ASSERT(t->closed == 0);                /* never from inside the call */
	ASSERT(fx_run_until(&t->f, &t->closed, 5000));
	fx_finish(&t->f);
}

/* Closes the raw peer and waits until libuv let go of it (so it may be reused). */
static void raw_done(struct mux_fx *t, rawpeer *r)
{
	raw_close(r);
	ASSERT(fx_run_until(&t->f, &r->closed, 5000));
}

/* Sends req and waits for the mux to close the connection; r->in holds the answer, NUL ended. */
static void exchange(struct mux_fx *t, rawpeer *r, const char *req)
{
	memset(r, 0, sizeof(*r));
	raw_put(r, req, strlen(req));
	raw_start(&t->f, r, t->port);
	ASSERT(fx_run_until(&t->f, &r->eof, 5000));
	r->in[r->inlen < sizeof(r->in) ? r->inlen : sizeof(r->in) - 1] = 0;
	raw_done(t, r);
}

static void http(void **state)
{
	struct mux_fx t;
	static rawpeer r;
	mux_start(&t, 2000, 16);

	exchange(&t, &r, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
	ASSERT(strncmp((char *)r.in, "HTTP/1.1 200 OK\r\n", 17) == 0);
	ASSERT(strstr((char *)r.in, "Content-Length: 2\r\n"));
	ASSERT(strstr((char *)r.in, "Connection: close\r\n"));
	const char *end = strstr((char *)r.in, "\r\n\r\n");
	ASSERT(end && strcmp(end, "\r\n\r\nok") == 0); /* the body and nothing after it */

	exchange(&t, &r, "GET /healthz?verbose=1 HTTP/1.0\r\n\r\n");
	ASSERT(strncmp((char *)r.in, "HTTP/1.1 200 OK\r\n", 17) == 0);

	exchange(&t, &r, "HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
	ASSERT(strncmp((char *)r.in, "HTTP/1.1 200 OK\r\n", 17) == 0);
	ASSERT(strstr((char *)r.in, "Content-Length: 2\r\n"));
	ASSERT(r.inlen >= 4 && memcmp(r.in + r.inlen - 4, "\r\n\r\n", 4) == 0); /* no body */

	exchange(&t, &r, "GET /nope HTTP/1.1\r\n\r\n");
	ASSERT(strncmp((char *)r.in, "HTTP/1.1 404 Not Found\r\n", 24) == 0);
	ASSERT(strstr((char *)r.in, "Content-Length: 0\r\n"));

	int calls = t.http_calls;
	exchange(&t, &r, "POST /healthz HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
	ASSERT(strncmp((char *)r.in, "HTTP/1.1 405 Method Not Allowed\r\n", 33) == 0);
	ASSERT(strstr((char *)r.in, "Allow: GET, HEAD\r\n"));
	exchange(&t, &r, "DELETE / HTTP/1.1\r\n\r\n");
	ASSERT(strncmp((char *)r.in, "HTTP/1.1 405 ", 13) == 0);

	exchange(&t, &r, "GET healthz HTTP/1.1\r\n\r\n");
	ASSERT(strncmp((char *)r.in, "HTTP/1.1 400 Bad Request\r\n", 26) == 0);
	exchange(&t, &r, "GET /a\x01 HTTP/1.1\r\n\r\n");
	ASSERT(strncmp((char *)r.in, "HTTP/1.1 400 ", 13) == 0);

	/* a head larger than the mux's buffer */
	static char big[16384];
	size_t n = (size_t)snprintf(big, sizeof(big), "GET /healthz HTTP/1.1\r\n");
	while (n + 32 < sizeof(big))
		n += (size_t)snprintf(big + n, sizeof(big) - n, "X-Filler: %08zu\r\n", n);
	exchange(&t, &r, big);
	ASSERT(strncmp((char *)r.in, "HTTP/1.1 400 ", 13) == 0);
	ASSERT(t.http_calls == calls); /* on_http only ever sees GET and HEAD */
	mux_finish(&t);
}

static void hostile(void **state)
{
	struct mux_fx t;
	static rawpeer r;
	mux_start(&t, 300, 16);

	/* garbage, a TLS ClientHello, lowercase methods, a link of another version: closed, silent */
	static const char *const junk[] = {"hello there\r\n\r\n", "\x16\x03\x01\x00\x10garbage",
					   "get / HTTP/1.1\r\n\r\n", "TERNLK\r\x02",
					   "\x00\x00\x00\x00\x00\x00\x00\x00\x00"};
	for (size_t i = 0; i < sizeof(junk) / sizeof(junk[0]); i++) {
		uint64_t t0 = uv_hrtime();
		memset(&r, 0, sizeof(r));
		raw_put(&r, junk[i], i == 4 ? 9 : strlen(junk[i]));
		raw_start(&t.f, &r, t.port);
		ASSERT(fx_run_until(&t.f, &r.eof, 5000));
		ASSERT(r.inlen == 0);
		ASSERT((uv_hrtime() - t0) / 1000000u < 250); /* at once, not at the timeout */
		raw_done(&t, &r);
	}

	/* a client that sends nothing, and one that stops half way through its head */
	static const char *const slow[] = {"", "GET /healthz HTTP/1.1\r\nHost:"};
	for (size_t i = 0; i < 2; i++) {
		uint64_t t0 = uv_hrtime();
		exchange(&t, &r, slow[i]);
		uint64_t ms = (uv_hrtime() - t0) / 1000000u;
		ASSERT(r.inlen == 0);
		ASSERT(ms >= 250 && ms < 3000);
	}
	ASSERT(t.http_calls == 0 && t.links == 0);
	mux_finish(&t);
}

static void pending_cap(void **state)
{
	struct mux_fx t;
	static rawpeer a, b, c;
	mux_start(&t, 3000, 1);
	memset(&a, 0, sizeof(a));
	raw_start(&t.f, &a, t.port); /* silent: holds the only slot */
	ASSERT(fx_run_until(&t.f, &a.connected, 5000));
	fx_run_ms(&t.f, 50);
	uint64_t t0 = uv_hrtime();
	exchange(&t, &b, "GET /healthz HTTP/1.1\r\n\r\n");
	ASSERT(b.inlen == 0 && (uv_hrtime() - t0) / 1000000u < 1000);
	raw_done(&t, &a);
	fx_run_ms(&t.f, 50);
	exchange(&t, &c, "GET /healthz HTTP/1.1\r\n\r\n");
	ASSERT(strncmp((char *)c.in, "HTTP/1.1 200 OK\r\n", 17) == 0);

	/* closing with a connection still being sniffed */
	static rawpeer d;
	memset(&d, 0, sizeof(d));
	raw_start(&t.f, &d, t.port);
	ASSERT(fx_run_until(&t.f, &d.connected, 5000));
	fx_run_ms(&t.f, 50);
	portmux_close(t.m, on_mux_closed, &t);
	ASSERT(fx_run_until(&t.f, &t.closed, 5000));
	ASSERT(fx_run_until(&t.f, &d.eof, 5000));
	raw_done(&t, &d);
	fx_finish(&t.f);
}

static void link_through_mux(void **state)
{
	struct mux_fx t;
	mux_start(&t, 2000, 16);
	ASSERT(link_dial(&t.f.loop, &t.f.ccfg, "127.0.0.1", t.port, &t.f.cli) == 0);
	ASSERT(fx_run_until(&t.f, &t.f.cli_ready, 5000));
	ASSERT(fx_run_until(&t.f, &t.f.srv_ready, 5000));
	ASSERT(t.links == 1 && t.f.srv);
	for (int i = 0; i < 20; i++) {
		cstate cs = {0};
		Tern__Link__Echo req = TERN__LINK__ECHO__INIT;
		req.id = 500 + (uint64_t)i;
		req.data.data = (uint8_t *)"via mux";
		req.data.len = 7;
		ASSERT(link_unary(t.f.cli, DIAG, "Unary", &req.base, NULL, cstate_unary_done, &cs) == 0);
		ASSERT(fx_run_until(&t.f, &cs.done, 5000));
		ASSERT(cs.code == LINK_OK && cs.last_id == 500 + (uint64_t)i && cs.bytes == 7);
	}
	ASSERT(t.f.d.unary == 20);
	/* the HTTP side keeps working next to the link */
	static rawpeer r;
	exchange(&t, &r, "GET /healthz HTTP/1.1\r\n\r\n");
	ASSERT(strncmp((char *)r.in, "HTTP/1.1 200 OK\r\n", 17) == 0);
	/* the adopted link outlives the mux */
	portmux_close(t.m, on_mux_closed, &t);
	ASSERT(fx_run_until(&t.f, &t.closed, 5000));
	cstate cs = {0};
	Tern__Link__Echo req = TERN__LINK__ECHO__INIT;
	req.id = 9;
	ASSERT(link_unary(t.f.cli, DIAG, "Unary", &req.base, NULL, cstate_unary_done, &cs) == 0);
	ASSERT(fx_run_until(&t.f, &cs.done, 5000) && cs.code == LINK_OK);
	link_close(t.f.srv, NULL);
	ASSERT(fx_run_until(&t.f, &t.f.srv_closed, 5000));
	fx_finish(&t.f);
}

static void busy_port(void **state)
{
	struct mux_fx t;
	mux_start(&t, 1000, 4);
	struct portmux *m2 = NULL;
	struct portmux_config c = {.loop = &t.f.loop, .host = "127.0.0.1", .port = t.port};
	char why[256] = "";
	ASSERT(portmux_start(&m2, &c, why, sizeof(why)) == -1 && m2 == NULL);
	ASSERT(strstr(why, "in use"));
	c.host = "no-such-host.invalid";
	c.port = 0;
	ASSERT(portmux_start(&m2, &c, why, sizeof(why)) == -1 && m2 == NULL && why[0]);
	c.host = "localhost"; /* names are resolved */
	ASSERT(portmux_start(&m2, &c, why, sizeof(why)) == 0);
	ASSERT(portmux_port(m2) > 0 && portmux_port(m2) != t.port);
	portmux_close(m2, NULL, NULL);
	mux_finish(&t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(http),
		cmocka_unit_test(hostile),
		cmocka_unit_test(pending_cap),
		cmocka_unit_test(link_through_mux),
		cmocka_unit_test(busy_port),
	};
	return cmocka_run_group_tests_name("portmux", tests, NULL, NULL);
}
