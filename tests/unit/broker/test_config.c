/* Runtime configuration: defaults, config_set bounds against limits.h, the
 * config file format and HOST:PORT splitting. */
#include "harness.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void config_defaults_match_limits(void **state)
{
	(void)state;
	struct tern_config c;
	memset(&c, 0xa5, sizeof(c));
	config_defaults(&c);
	assert_string_equal(c.listen, "127.0.0.1:8080");
	assert_string_equal(c.data_dir, "./tern-data");
	assert_int_equal(c.max_message_bytes, 64 * 1024);
	assert_int_equal(c.max_message_bytes, TERN_MESSAGE_BYTES_DEFAULT);
	assert_int_equal(c.history_max_messages, 1000);
	assert_int_equal(c.history_max_age_s, 24 * 3600);
	assert_int_equal(c.heartbeat_ms, TERN_HEARTBEAT_MS_DEFAULT);
	assert_int_equal(c.session_queue_max_bytes, TERN_SESSION_QUEUE_BYTES_DEFAULT);
	assert_int_equal(c.idempotency_window_s, 120);
	assert_int_equal(c.rest_max_body_bytes, TERN_REST_BODY_BYTES_DEFAULT);
	assert_int_equal(c.handshake_timeout_s, TERN_HANDSHAKE_TIMEOUT_S_DEFAULT);
	assert_true(c.store_sync_full);
	assert_true(c.store_sweep_interval_ms > 0);
}

struct bound {
	const char *key;
	size_t off;
	unsigned long long min, max;
};

#define B(k, lo, hi) {#k, offsetof(struct tern_config, k), lo, hi}

static uint64_t field(const struct tern_config *c, size_t off)
{
	uint64_t v;
	memcpy(&v, (const char *)c + off, sizeof(v));
	return v;
}

/* Sets key to value and expects acceptance with the field equal to want. */
static void set_ok(struct tern_config *c, const struct bound *b, unsigned long long want)
{
	char val[64], err[256] = "";
	snprintf(val, sizeof(val), "%llu", want);
	if (config_set(c, b->key, val, err, sizeof(err)) != 0)
		fail_msg("%s %s refused: %s", b->key, val, err);
	assert_int_equal(field(c, b->off), want);
}

static void set_bad(struct tern_config *c, const char *key, size_t off, const char *val)
{
	char err[256] = "";
	uint64_t before = field(c, off);
	if (config_set(c, key, val, err, sizeof(err)) != -1)
		fail_msg("%s '%s' accepted", key, val);
	if (!strstr(err, key))
		fail_msg("%s '%s': reason does not name the key: %s", key, val, err);
	assert_int_equal(field(c, off), before);
}

static void config_set_numeric_bounds(void **state)
{
	(void)state;
	static const struct bound bounds[] = {
		B(max_message_bytes, TERN_MESSAGE_BYTES_MIN, TERN_MESSAGE_BYTES_MAX),
		B(heartbeat_ms, TERN_HEARTBEAT_MS_MIN, TERN_HEARTBEAT_MS_MAX),
		B(session_queue_max_bytes, TERN_SESSION_QUEUE_BYTES_MIN,
		  TERN_SESSION_QUEUE_BYTES_MAX),
		B(rest_max_body_bytes, 1024, TERN_REST_BODY_BYTES_MAX),
		B(handshake_timeout_s, TERN_HANDSHAKE_TIMEOUT_S_MIN, TERN_HANDSHAKE_TIMEOUT_S_MAX),
		B(idempotency_window_s, 1, 7 * 24 * 3600),
		B(history_max_messages, 0, 100000000),
		B(history_max_age_s, 0, 365ull * 24 * 3600),
		B(store_sweep_interval_ms, 10, 3600000),
	};
	struct tern_config c;
	config_defaults(&c);
	for (size_t i = 0; i < N(bounds); i++) {
		const struct bound *b = &bounds[i];
		char v[64];
		set_ok(&c, b, b->min);
		set_ok(&c, b, b->max);
		set_ok(&c, b, (b->min + b->max) / 2);
		if (b->min > 0) {
			snprintf(v, sizeof(v), "%llu", b->min - 1);
			set_bad(&c, b->key, b->off, v);
		}
		snprintf(v, sizeof(v), "%llu", b->max + 1);
		set_bad(&c, b->key, b->off, v);
		static const char *const junk[] = {
			"-1", "-0", "", " ", "abc", "12abc", "1.5", "1e3", "0x10", "1 2",
			"18446744073709551616", "99999999999999999999999",
		};
		for (size_t j = 0; j < N(junk); j++)
			set_bad(&c, b->key, b->off, junk[j]);
	}
}

static void config_set_strings(void **state)
{
	(void)state;
	struct tern_config c;
	char err[256];
	config_defaults(&c);

	assert_int_equal(config_set(&c, "listen", "0.0.0.0:9000", err, sizeof(err)), 0);
	assert_string_equal(c.listen, "0.0.0.0:9000");
	assert_int_equal(config_set(&c, "listen", "[::1]:80", err, sizeof(err)), 0);
	assert_string_equal(c.listen, "[::1]:80");
	static const char *const bad_listen[] = {"", "localhost", ":80", "host:", "host:70000",
						 "host:-1", "[::1]", "host:80x"};
	for (size_t i = 0; i < N(bad_listen); i++) {
		err[0] = 0;
		if (config_set(&c, "listen", bad_listen[i], err, sizeof(err)) != -1)
			fail_msg("listen '%s' accepted", bad_listen[i]);
		assert_non_null(strstr(err, "listen"));
		assert_string_equal(c.listen, "[::1]:80");
	}

	assert_int_equal(config_set(&c, "data_dir", "/var/lib/tern", err, sizeof(err)), 0);
	assert_string_equal(c.data_dir, "/var/lib/tern");
	assert_int_equal(config_set(&c, "data_dir", "", err, sizeof(err)), -1);
	char longdir[sizeof(c.data_dir) + 1];
	memset(longdir, 'd', sizeof(longdir) - 1);
	longdir[sizeof(longdir) - 1] = 0;
	assert_int_equal(config_set(&c, "data_dir", longdir, err, sizeof(err)), -1);
	assert_string_equal(c.data_dir, "/var/lib/tern");
	longdir[sizeof(c.data_dir) - 1] = 0; /* 1023 bytes: fits */
	assert_int_equal(config_set(&c, "data_dir", longdir, err, sizeof(err)), 0);
	assert_int_equal(strlen(c.data_dir), sizeof(c.data_dir) - 1);

	assert_int_equal(config_set(&c, "store_sync", "normal", err, sizeof(err)), 0);
	assert_false(c.store_sync_full);
	assert_int_equal(config_set(&c, "store_sync", "full", err, sizeof(err)), 0);
	assert_true(c.store_sync_full);
	assert_int_equal(config_set(&c, "store_sync", "FULLY", err, sizeof(err)), -1);
	assert_int_equal(config_set(&c, "store_sync", "", err, sizeof(err)), -1);
	assert_true(c.store_sync_full);
}

static void config_set_unknown_key(void **state)
{
	(void)state;
	struct tern_config c, before;
	char err[256] = "";
	config_defaults(&c);
	before = c;
	assert_int_equal(config_set(&c, "max_message_byte", "100", err, sizeof(err)), -1);
	assert_non_null(strstr(err, "max_message_byte"));
	assert_int_equal(config_set(&c, "", "1", err, sizeof(err)), -1);
	assert_int_equal(config_set(&c, "MAX_MESSAGE_BYTES", "100", err, sizeof(err)), -1);
	assert_memory_equal(&c, &before, sizeof(c));
	/* A tiny error buffer is truncated, never overrun. */
	char small[8];
	memset(small, 'x', sizeof(small));
	assert_int_equal(config_set(&c, "no_such_setting_at_all", "1", small, sizeof(small)), -1);
	assert_int_equal(small[sizeof(small) - 1], 0);
}

/* Writes text to DIR/name and returns the path in path. */
static void write_file(struct h *h, const char *name, const char *text, char *path, size_t cap)
{
	snprintf(path, cap, "%s/%s", h->dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

static void config_load_file_ok(void **state)
{
	struct h *h = *state;
	char path[512], err[512] = "";
	write_file(h, "tern.conf",
		   "# Tern config\n"
		   "\n"
		   "   \n"
		   "listen 127.0.0.1:9090\n"
		   "\tmax_message_bytes   1024   # one KiB\n"
		   "history_max_messages 5\n"
		   "# history_max_age_s 1\n"
		   "history_max_age_s 60\n"
		   "data_dir /tmp/tern data\n"
		   "store_sync normal\n"
		   "idempotency_window_s 30", /* no final newline */
		   path, sizeof(path));
	struct tern_config c;
	config_defaults(&c);
	if (config_load_file(&c, path, err, sizeof(err)) != 0)
		fail_msg("load: %s", err);
	assert_string_equal(c.listen, "127.0.0.1:9090");
	assert_int_equal(c.max_message_bytes, 1024);
	assert_int_equal(c.history_max_messages, 5);
	assert_int_equal(c.history_max_age_s, 60);
	assert_string_equal(c.data_dir, "/tmp/tern data");
	assert_false(c.store_sync_full);
	assert_int_equal(c.idempotency_window_s, 30);
	/* Untouched keys keep their defaults. */
	assert_int_equal(c.heartbeat_ms, TERN_HEARTBEAT_MS_DEFAULT);

	/* An empty file and a file of comments change nothing. */
	struct tern_config d, e;
	config_defaults(&d);
	e = d;
	write_file(h, "empty.conf", "", path, sizeof(path));
	assert_int_equal(config_load_file(&d, path, err, sizeof(err)), 0);
	write_file(h, "comments.conf", "# a\n\n#b c\n   # indented\n", path, sizeof(path));
	assert_int_equal(config_load_file(&d, path, err, sizeof(err)), 0);
	assert_memory_equal(&d, &e, sizeof(d));
}

static void expect_load_error(struct h *h, const char *text, int line, const char *needle)
{
	char path[512], err[512] = "", prefix[600];
	write_file(h, "bad.conf", text, path, sizeof(path));
	struct tern_config c;
	config_defaults(&c);
	assert_int_equal(config_load_file(&c, path, err, sizeof(err)), -1);
	snprintf(prefix, sizeof(prefix), "%s:%d: ", path, line);
	if (strncmp(err, prefix, strlen(prefix)) != 0)
		fail_msg("error '%s' does not start with '%s'", err, prefix);
	if (needle && !strstr(err, needle))
		fail_msg("error '%s' does not mention '%s'", err, needle);
}

static void config_load_file_errors(void **state)
{
	struct h *h = *state;
	expect_load_error(h, "# ok\n\nheartbeat_ms 1000\nmax_message_bytes 1\n", 4,
			  "max_message_bytes");
	expect_load_error(h, "max_message_bytes 65536\nbogus_key 3\n", 2, "bogus_key");
	expect_load_error(h, "\n\n\nheartbeat_ms\n", 4, "heartbeat_ms");
	expect_load_error(h, "heartbeat_ms -5\n", 1, "heartbeat_ms");
	expect_load_error(h, "heartbeat_ms 10 # too small\n", 1, "heartbeat_ms");
	expect_load_error(h, "listen nowhere\n", 1, "listen");
	expect_load_error(h, "store_sync maybe\n", 1, "store_sync");

	/* A line longer than the reader's buffer is an error, not two lines. */
	size_t big = 5000;
	char *text = malloc(big + 32);
	assert_non_null(text);
	strcpy(text, "data_dir /x\ndata_dir ");
	size_t o = strlen(text);
	memset(text + o, 'a', big);
	strcpy(text + o + big, "\n");
	expect_load_error(h, text, 2, NULL);
	free(text);

	char err[512] = "";
	char missing[512];
	snprintf(missing, sizeof(missing), "%s/does-not-exist.conf", h->dir);
	struct tern_config c;
	config_defaults(&c);
	assert_int_equal(config_load_file(&c, missing, err, sizeof(err)), -1);
	assert_non_null(strstr(err, missing));
}

static void hostport_ok(const char *s, const char *host, int port)
{
	char got[64];
	int p = -2;
	memset(got, 'x', sizeof(got));
	if (config_split_hostport(s, got, sizeof(got), &p) != 0)
		fail_msg("'%s' refused", s);
	assert_string_equal(got, host);
	assert_int_equal(p, port);
}

static void config_hostport(void **state)
{
	(void)state;
	hostport_ok("127.0.0.1:8080", "127.0.0.1", 8080);
	hostport_ok("localhost:1", "localhost", 1);
	hostport_ok("0.0.0.0:65535", "0.0.0.0", 65535);
	hostport_ok("[::1]:80", "::1", 80);
	hostport_ok("[::]:8080", "::", 8080);
	hostport_ok("[fe80::1%eth0]:443", "fe80::1%eth0", 443);
	hostport_ok("example.com:443", "example.com", 443);

	static const char *const bad[] = {
		"", "localhost", ":80", "host:", "host:65536", "host:-1", "host:80x",
		"host:x80", "[::1]", "[::1]80", "[::1]:", "[]:80", "[::1:80", "[::1]:99999",
		"[::1]:http",
	};
	for (size_t i = 0; i < N(bad); i++) {
		char host[64];
		int p = -2;
		if (config_split_hostport(bad[i], host, sizeof(host), &p) != -1)
			fail_msg("'%s' accepted as host '%s' port %d", bad[i], host, p);
	}
	/* A host that does not fit the buffer is refused, never truncated. */
	char small[4];
	int p;
	assert_int_equal(config_split_hostport("abc:1", small, sizeof(small), &p), 0);
	assert_string_equal(small, "abc");
	assert_int_equal(config_split_hostport("abcd:1", small, sizeof(small), &p), -1);
	assert_int_equal(config_split_hostport("[abcd]:1", small, sizeof(small), &p), -1);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(config_defaults_match_limits),
		cmocka_unit_test(config_set_numeric_bounds),
		cmocka_unit_test(config_set_strings),
		cmocka_unit_test(config_set_unknown_key),
		cmocka_unit_test_setup_teardown(config_load_file_ok, h_setup, h_teardown),
		cmocka_unit_test_setup_teardown(config_load_file_errors, h_setup, h_teardown),
		cmocka_unit_test(config_hostport),
	};
	return h_run("config", tests, N(tests), argc, argv);
}
