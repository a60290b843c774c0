/* One port, two protocols: sniffs each connection's first bytes and hands a link to on_link or
 * answers one HTTP/1.1 request (portmux.h). */
#include "portmux.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "link_frame.h"
#include "link_limits.h"

/* Bytes one connection may send before it is told apart and (HTTP) its whole request head:
 * /healthz and /metrics requests from curl or Prometheus are a few hundred bytes; a head that
 * does not fit is answered 400. Allocated once with the connection and never grown. */
#define PORTMUX_BUF_BYTES 4096u
/* A method token longer than this is not HTTP ("OPTIONS" is 7, "PROPFIND" 8). */
#define PORTMUX_METHOD_MAX 16u
/* Defaults for zero config fields: the link's own handshake timeout, and a bound on sniffed
 * connections that costs about 5 MiB of buffers. */
#define PORTMUX_TIMEOUT_MS_DEFAULT LINK_HANDSHAKE_TIMEOUT_MS_DEFAULT
#define PORTMUX_MAX_PENDING_DEFAULT 1024u
/* Kernel accept queue. */
#define PORTMUX_BACKLOG 128

struct pm_list {
	struct pm_list *next, *prev;
};

#define pm_container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

enum pm_state { PM_SNIFF, PM_HTTP, PM_REPLY };

struct pm_conn {
	struct pm_list node;
	struct portmux *m;
	uv_tcp_t tcp;
	uv_timer_t timer;
	uv_write_t wreq;
	uv_shutdown_t sreq;
	int state, closing, handles;
	size_t len;
	char *body; /* the response body, freed with the connection */
	char hdr[256];
	char buf[PORTMUX_BUF_BYTES];
};

struct portmux {
	struct portmux_config c;
	uv_tcp_t lst;
	struct pm_list conns;
	unsigned pending;
	int port, closing, lst_open;
	void (*done)(void *arg);
	void *done_arg;
};

/* ---- request head parser ---- */

static int is_ctl(unsigned char ch) { return ch < 0x20 || ch == 0x7f; }

/* Compares buf[0..len) with the start of lit: 1 when buf holds all of lit, 0 when buf is a
 * shorter prefix of it, -1 on a mismatch. */
static int match_prefix(const char *buf, size_t len, const char *lit)
{
	size_t n = strlen(lit);
	size_t k = len < n ? len : n;
	if (memcmp(buf, lit, k) != 0)
		return -1;
	return len >= n ? 1 : 0;
}

/* The end of the head: the blank line. from is where the header lines start (just after the
 * request line's CRLF). Returns 1, 0 for more bytes, -1 for a NUL inside the head (no HTTP head
 * carries one; refusing it keeps C string users safe). Bytes after the head are not looked at. */
static int find_blank_line(const char *buf, size_t len, size_t from)
{
	for (size_t i = from; i < len; i++) {
		if (buf[i] == 0)
			return -1;
		if (i >= from + 1 && memcmp(buf + i - 3, "\r\n\r\n", 4) == 0)
			return 1;
	}
	return 0;
}

int portmux_parse_head(const char *buf, size_t len, const char **method, size_t *method_len,
		       const char **path, size_t *path_len)
{
	size_t i = 0, mlen, tstart, tlen, plen;
	/* method: a token of uppercase letters (RFC 9110 section 9: methods are case-sensitive) */
	while (i < len && buf[i] >= 'A' && buf[i] <= 'Z')
		if (++i > PORTMUX_METHOD_MAX)
			return -1;
	if (i == len)
		return 0;
	if (i == 0 || buf[i] != ' ')
		return -1;
	mlen = i++;
	/* request target, origin form (RFC 9112 section 3.2.1) */
	tstart = i;
	if (i == len)
		return 0;
	if (buf[i] != '/')
		return -1;
	while (i < len && buf[i] != ' ') {
		unsigned char ch = (unsigned char)buf[i];
		if (is_ctl(ch) || ch >= 0x80)
			return -1;
		i++;
	}
	if (i == len)
		return 0;
	tlen = i - tstart;
	i++;
	/* "HTTP/1.x" CRLF */
	int r = match_prefix(buf + i, len - i, "HTTP/1.");
	if (r <= 0)
		return r;
	i += 7;
	if (i == len)
		return 0;
	if (buf[i] < '0' || buf[i] > '9')
		return -1;
	i++;
	r = match_prefix(buf + i, len - i, "\r\n");
	if (r <= 0)
		return r;
	i += 2;
	r = find_blank_line(buf, len, i);
	if (r <= 0)
		return r;
	const char *q = memchr(buf + tstart, '?', tlen);
	plen = q ? (size_t)(q - (buf + tstart)) : tlen;
	*method = buf;
	*method_len = mlen;
	*path = buf + tstart;
	*path_len = plen;
	return 1;
}

/* ---- connections ---- */

static void list_init(struct pm_list *l) { l->next = l->prev = l; }

static void list_add(struct pm_list *head, struct pm_list *n)
{
	n->prev = head->prev;
	n->next = head;
	head->prev->next = n;
	head->prev = n;
}

static void list_del(struct pm_list *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->next = n->prev = NULL; /* poisoned: a second removal faults */
}

static void maybe_free(struct portmux *m)
{
	if (!m->closing || m->lst_open || m->conns.next != &m->conns)
		return;
	void (*done)(void *) = m->done;
	void *arg = m->done_arg;
	assert(m->pending == 0);
	free(m);
	if (done)
		done(arg);
}

static void on_conn_closed(uv_handle_t *h)
{
	struct pm_conn *c = h->data;
	if (--c->handles > 0)
		return;
	struct portmux *m = c->m;
	list_del(&c->node);
	m->pending--;
	free(c->body);
	free(c);
	maybe_free(m);
}

/* Idempotent; the memory goes once both handles are closed. */
static void conn_close(struct pm_conn *c)
{
	if (c->closing)
		return;
	c->closing = 1;
	uv_close((uv_handle_t *)&c->tcp, on_conn_closed);
	uv_close((uv_handle_t *)&c->timer, on_conn_closed);
}

static void on_timeout(uv_timer_t *t) { conn_close(t->data); }

static void on_shutdown(uv_shutdown_t *req, int status)
{
	struct pm_conn *c = req->data;
	if (!c->closing)
		conn_close(c);
}

static void on_written(uv_write_t *req, int status)
{
	struct pm_conn *c = req->data;
	if (c->closing)
		return;
	c->sreq.data = c;
	if (status < 0 || uv_shutdown(&c->sreq, (uv_stream_t *)&c->tcp, on_shutdown) != 0)
		conn_close(c);
}

static const char *reason(int status)
{
	switch (status) {
	case 200: return "OK";
	case 204: return "No Content";
	case 301: return "Moved Permanently";
	case 302: return "Found";
	case 304: return "Not Modified";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 503: return "Service Unavailable";
	default: return "Unknown";
	}
}

/* Sends the one response (body is taken) and closes after it; reading goes on and discards, so
 * the close does not reset a connection whose peer sent more. */
static void reply(struct pm_conn *c, int status, const char *ctype, char *body, size_t body_len,
		  int head_only)
{
	c->state = PM_REPLY;
	c->body = body;
	if (status < 100 || status > 599)
		status = 500;
	int n = snprintf(c->hdr, sizeof(c->hdr),
			 "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
			 "Connection: close\r\n\r\n",
			 status, reason(status), ctype ? ctype : "text/plain", body_len,
			 status == 405 ? "Allow: GET, HEAD\r\n" : "");
	if (n < 0 || (size_t)n >= sizeof(c->hdr)) {
		conn_close(c);
		return;
	}
	uv_buf_t b[2] = {uv_buf_init(c->hdr, (unsigned)n),
			 uv_buf_init(body ? body : c->hdr, (unsigned)body_len)};
	unsigned nb = (!head_only && body && body_len) ? 2 : 1;
	c->wreq.data = c;
	/* a stalled reader gets the handshake timeout again to take the response */
	uv_timer_start(&c->timer, on_timeout, c->m->c.handshake_timeout_ms, 0);
	if (uv_write(&c->wreq, (uv_stream_t *)&c->tcp, b, nb, on_written) != 0)
		conn_close(c);
}

static void reply_text(struct pm_conn *c, int status, const char *text)
{
	size_t n = strlen(text);
	char *body = malloc(n);
	if (!body) {
		conn_close(c);
		return;
	}
	memcpy(body, text, n);
	reply(c, status, "text/plain", body, n, 0);
}

static void serve_http(struct pm_conn *c)
{
	const char *method, *path;
	size_t mlen, plen;
	int r = portmux_parse_head(c->buf, c->len, &method, &mlen, &path, &plen);
	if (r == 0 && c->len < sizeof(c->buf))
		return;
	if (r <= 0) {
		reply_text(c, 400, "bad request\n");
		return;
	}
	int head = mlen == 4 && memcmp(method, "HEAD", 4) == 0;
	if (!head && !(mlen == 3 && memcmp(method, "GET", 3) == 0)) {
		reply_text(c, 405, "method not allowed\n");
		return;
	}
	int status = 404;
	const char *ctype = "text/plain";
	char *body = NULL;
	size_t body_len = 0;
	if (c->m->c.on_http)
		c->m->c.on_http(c->m->c.arg, path, plen, &status, &ctype, &body, &body_len);
	if (!body)
		body_len = 0;
	reply(c, status, ctype, body, body_len, head);
}

static void hand_off_link(struct pm_conn *c)
{
	struct portmux *m = c->m;
	uv_os_fd_t fd;
	int dupfd = -1;
	uv_read_stop((uv_stream_t *)&c->tcp);
	if (uv_fileno((uv_handle_t *)&c->tcp, &fd) == 0)
		dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0);
	/* closing the uv handle closes its descriptor; the duplicate keeps the socket open */
	conn_close(c);
	if (dupfd < 0)
		return;
	if (!m->c.on_link || m->c.on_link(m->c.arg, dupfd, (const uint8_t *)c->buf, c->len) != 0)
		close(dupfd);
}

enum { SNIFF_MORE, SNIFF_LINK, SNIFF_HTTP, SNIFF_JUNK };

/* What the first bytes say the connection is. */
static int sniff(const char *buf, size_t len)
{
	int r = link_preface_check((const uint8_t *)buf, len);
	if (r == 1)
		return SNIFF_LINK;
	if (r == 0)
		return SNIFF_MORE;
	if (r != -EPROTO)
		return SNIFF_JUNK; /* a link of another version */
	for (size_t i = 0; i < len && i <= PORTMUX_METHOD_MAX; i++) {
		if (buf[i] == ' ')
			return i > 0 ? SNIFF_HTTP : SNIFF_JUNK;
		if (buf[i] < 'A' || buf[i] > 'Z')
			return SNIFF_JUNK;
	}
	return len <= PORTMUX_METHOD_MAX ? SNIFF_MORE : SNIFF_JUNK;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
	struct pm_conn *c = h->data;
	if (c->state == PM_REPLY) /* discarding whatever follows the request */
		*b = uv_buf_init(c->buf, sizeof(c->buf));
	else
		*b = uv_buf_init(c->buf + c->len, (unsigned)(sizeof(c->buf) - c->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
	struct pm_conn *c = s->data;
	if (c->closing)
		return;
	if (n < 0) {
		if (c->state == PM_REPLY)
			uv_read_stop(s); /* the peer half-closed; our response still goes out */
		else
			conn_close(c);
		return;
	}
	if (c->state == PM_REPLY || n == 0)
		return;
	c->len += (size_t)n;
	if (c->state == PM_SNIFF) {
		switch (sniff(c->buf, c->len)) {
		case SNIFF_MORE:
			return;
		case SNIFF_LINK:
			hand_off_link(c);
			return;
		case SNIFF_HTTP:
			c->state = PM_HTTP;
			break;
		default:
			conn_close(c);
			return;
		}
	}
	serve_http(c);
}

static void on_refused_closed(uv_handle_t *h) { free(h); }

/* Above max_pending: accept (so the kernel queue drains) and close at once. */
static void refuse(struct portmux *m)
{
	uv_tcp_t *t = malloc(sizeof(*t));
	if (!t)
		return;
	uv_tcp_init(m->c.loop, t);
	uv_accept((uv_stream_t *)&m->lst, (uv_stream_t *)t);
	uv_close((uv_handle_t *)t, on_refused_closed);
}

static void on_connection(uv_stream_t *s, int status)
{
	struct portmux *m = s->data;
	if (status < 0 || m->closing)
		return;
	if (m->pending >= m->c.max_pending) {
		refuse(m);
		return;
	}
	struct pm_conn *c = malloc(sizeof(*c));
	if (!c) {
		refuse(m);
		return;
	}
	memset(c, 0, offsetof(struct pm_conn, buf)); /* the buffer is written before it is read */
	c->m = m;
	c->handles = 2;
	uv_tcp_init(m->c.loop, &c->tcp);
	uv_timer_init(m->c.loop, &c->timer);
	c->tcp.data = c;
	c->timer.data = c;
	list_add(&m->conns, &c->node);
	m->pending++;
	if (uv_accept(s, (uv_stream_t *)&c->tcp) != 0 ||
	    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
		conn_close(c);
		return;
	}
	uv_timer_start(&c->timer, on_timeout, m->c.handshake_timeout_ms, 0);
}

/* ---- listener ---- */

/* A host may be a name: resolved once at start (the loop is not running yet, so a blocking
 * lookup harms nobody), IPv4 first, as the edge does. */
static int resolve(const char *host, int port, struct sockaddr_storage *ss, socklen_t *sl,
		   char *why, size_t why_len)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_ADDRCONFIG}, *res, *ai;
	int rc = getaddrinfo(host, NULL, &hints, &res);
	if (rc != 0) {
		snprintf(why, why_len, "cannot listen on %s: %s", host, gai_strerror(rc));
		return -1;
	}
	const struct addrinfo *pick = NULL;
	for (ai = res; ai; ai = ai->ai_next)
		if ((ai->ai_family == AF_INET || ai->ai_family == AF_INET6) &&
		    (!pick || (ai->ai_family == AF_INET && pick->ai_family != AF_INET)))
			pick = ai;
	if (!pick || pick->ai_addrlen > sizeof(*ss)) {
		freeaddrinfo(res);
		snprintf(why, why_len, "cannot listen on %s: no usable address", host);
		return -1;
	}
	memcpy(ss, pick->ai_addr, pick->ai_addrlen);
	*sl = pick->ai_addrlen;
	freeaddrinfo(res);
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons((uint16_t)port);
	else
		((struct sockaddr_in6 *)ss)->sin6_port = htons((uint16_t)port);
	return 0;
}

/* Binds and listens on a plain socket first, so a failure leaves no uv handle to close (and
 * no callback to wait for). Returns the socket or -1 with why set. */
static int open_listener(const struct sockaddr_storage *ss, socklen_t sl, const char *host,
			 int port, int *bound_port, char *why, size_t why_len)
{
	int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto out_err;
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)ss, sl) != 0 || listen(fd, PORTMUX_BACKLOG) != 0)
		goto out_close;
	struct sockaddr_storage got;
	socklen_t gl = sizeof(got);
	if (getsockname(fd, (struct sockaddr *)&got, &gl) != 0)
		goto out_close;
	*bound_port = ntohs(got.ss_family == AF_INET ? ((struct sockaddr_in *)&got)->sin_port
						     : ((struct sockaddr_in6 *)&got)->sin6_port);
	return fd;
out_close: {
	int e = errno;
	close(fd);
	errno = e;
}
out_err:
	snprintf(why, why_len, "cannot listen on %s:%d: %s", host, port, strerror(errno));
	return -1;
}

int portmux_start(struct portmux **out, const struct portmux_config *c, char *why, size_t why_len)
{
	struct sockaddr_storage ss;
	socklen_t sl;
	if (!out || !c || !c->loop || !c->host || c->port < 0 || c->port > 65535) {
		snprintf(why, why_len, "portmux: bad configuration");
		return -1;
	}
	if (resolve(c->host, c->port, &ss, &sl, why, why_len) != 0)
		return -1;
	struct portmux *m = calloc(1, sizeof(*m));
	if (!m) {
		snprintf(why, why_len, "portmux: out of memory");
		return -1;
	}
	m->c = *c;
	m->c.host = NULL; /* borrowed only for the start */
	if (!m->c.handshake_timeout_ms)
		m->c.handshake_timeout_ms = PORTMUX_TIMEOUT_MS_DEFAULT;
	if (!m->c.max_pending)
		m->c.max_pending = PORTMUX_MAX_PENDING_DEFAULT;
	list_init(&m->conns);
	int fd = open_listener(&ss, sl, c->host, c->port, &m->port, why, why_len);
	if (fd < 0)
		goto out_free;
	uv_tcp_init(c->loop, &m->lst);
	m->lst.data = m;
	m->lst_open = 1;
	int rc = uv_tcp_open(&m->lst, fd);
	if (rc != 0)
		close(fd);
	else
		rc = uv_listen((uv_stream_t *)&m->lst, PORTMUX_BACKLOG, on_connection);
	if (rc != 0) {
		snprintf(why, why_len, "cannot listen on %s:%d: %s", c->host, c->port, uv_strerror(rc));
		/* the handle is the loop's now: it frees m once closed; done is NULL */
		portmux_close(m, NULL, NULL);
		return -1;
	}
	*out = m;
	return 0;
out_free:
	free(m);
	return -1;
}

int portmux_port(const struct portmux *m) { return m->port; }

static void on_lst_closed(uv_handle_t *h)
{
	struct portmux *m = h->data;
	m->lst_open = 0;
	maybe_free(m);
}

void portmux_close(struct portmux *m, void (*done)(void *arg), void *arg)
{
	if (!m || m->closing)
		return;
	m->closing = 1;
	m->done = done;
	m->done_arg = arg;
	uv_close((uv_handle_t *)&m->lst, on_lst_closed);
	struct pm_list *pos, *tmp;
	for (pos = m->conns.next, tmp = pos->next; pos != &m->conns; pos = tmp, tmp = pos->next)
		conn_close(pm_container_of(pos, struct pm_conn, node));
}
