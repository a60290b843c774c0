#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tern_limits.h"

void config_defaults(struct tern_config *c)
{
	memset(c, 0, sizeof(*c));
	snprintf(c->listen, sizeof(c->listen), "127.0.0.1:8080");
	snprintf(c->data_dir, sizeof(c->data_dir), "./tern-data");
	snprintf(c->cors_allow_origin, sizeof(c->cors_allow_origin), "*");
	c->max_message_bytes = TERN_MESSAGE_BYTES_DEFAULT;
	c->history_max_messages = TERN_HISTORY_MESSAGES_DEFAULT;
	c->history_max_age_s = TERN_HISTORY_AGE_S_DEFAULT;
	c->heartbeat_ms = TERN_HEARTBEAT_MS_DEFAULT;
	c->flush_linger_ms = TERN_FLUSH_LINGER_MS_DEFAULT;
	c->session_queue_max_bytes = TERN_SESSION_QUEUE_BYTES_DEFAULT;
	c->idempotency_window_s = TERN_IDEM_WINDOW_S_DEFAULT;
	c->rest_max_body_bytes = TERN_REST_BODY_BYTES_DEFAULT;
	c->handshake_timeout_s = TERN_HANDSHAKE_TIMEOUT_S_DEFAULT;
	c->store_sweep_interval_ms = 60000;
	c->queue_max_depth = TERN_QUEUE_DEPTH_DEFAULT;
	c->store_sync_full = true;
	snprintf(c->region, sizeof(c->region), "local");
	c->links = TERN_LINKS_DEFAULT;
	c->workers = 1;
	c->node_timeout_ms = TERN_NODE_TIMEOUT_MS_DEFAULT;
}

struct num_key {
	const char *key;
	size_t off;
	uint64_t min, max;
};

#define NK(k, lo, hi) {#k, offsetof(struct tern_config, k), lo, hi}
static const struct num_key num_keys[] = {
	NK(max_message_bytes, TERN_MESSAGE_BYTES_MIN, TERN_MESSAGE_BYTES_MAX),
	NK(history_max_messages, 0, 100000000),
	NK(history_max_age_s, 0, 365ull * 24 * 3600),
	NK(heartbeat_ms, TERN_HEARTBEAT_MS_MIN, TERN_HEARTBEAT_MS_MAX),
	NK(flush_linger_ms, 0, TERN_FLUSH_LINGER_MS_MAX),
	NK(session_queue_max_bytes, TERN_SESSION_QUEUE_BYTES_MIN, TERN_SESSION_QUEUE_BYTES_MAX),
	NK(idempotency_window_s, 1, 7 * 24 * 3600),
	NK(rest_max_body_bytes, 1024, TERN_REST_BODY_BYTES_MAX),
	NK(handshake_timeout_s, TERN_HANDSHAKE_TIMEOUT_S_MIN, TERN_HANDSHAKE_TIMEOUT_S_MAX),
	NK(store_sweep_interval_ms, 10, 3600000),
	NK(queue_max_depth, 1, TERN_QUEUE_DEPTH_MAX),
	NK(links, 1, TERN_LINKS_MAX),
	NK(workers, 1, TERN_EDGE_WORKERS_MAX),
	NK(node_timeout_ms, TERN_NODE_TIMEOUT_MS_MIN, TERN_NODE_TIMEOUT_MS_MAX),
};

static int set_str(char *dst, size_t cap, const char *key, const char *v, char *err, size_t errlen)
{
	size_t n = strlen(v);
	if (n == 0 || n >= cap) {
		snprintf(err, errlen, "%s: value must be 1-%zu bytes", key, cap - 1);
		return -1;
	}
	memcpy(dst, v, n + 1);
	return 0;
}

int config_set(struct tern_config *c, const char *key, const char *v, char *err, size_t errlen)
{
	if (strcmp(key, "listen") == 0) {
		char host[256];
		int port;
		if (config_split_hostport(v, host, sizeof(host), &port) != 0) {
			snprintf(err, errlen, "listen: expected HOST:PORT, got '%s'", v);
			return -1;
		}
		c->listen_set = true;
		return set_str(c->listen, sizeof(c->listen), key, v, err, errlen);
	}
	if (strcmp(key, "data_dir") == 0)
		return set_str(c->data_dir, sizeof(c->data_dir), key, v, err, errlen);
	if (strcmp(key, "node_id") == 0 || strcmp(key, "region") == 0) {
		char *dst = key[0] == 'n' ? c->node_id : c->region;
		for (const char *p = v; *p; p++)
			if (!isalnum((unsigned char)*p) && !strchr("-_.", *p)) {
				snprintf(err, errlen, "%s: use letters, digits, '-', '_' and '.', got '%s'",
					 key, v);
				return -1;
			}
		return set_str(dst, sizeof(c->node_id), key, v, err, errlen);
	}
	if (strcmp(key, "nodes") == 0)
		return set_str(c->nodes, sizeof(c->nodes), key, v, err, errlen);
	if (strcmp(key, "join") == 0)
		return set_str(c->join, sizeof(c->join), key, v, err, errlen);
	if (strcmp(key, "log_calls") == 0) {
		static const char *const names[] = {"errors", "all", "off"};
		for (int i = 0; i < 3; i++)
			if (strcmp(v, names[i]) == 0) {
				c->log_calls = i;
				return 0;
			}
		snprintf(err, errlen, "log_calls: expected errors, all or off, got '%s'", v);
		return -1;
	}
	if (strcmp(key, "cors_allow_origin") == 0) {
		if (strcmp(v, "none") == 0) {
			c->cors_allow_origin[0] = 0;
			return 0;
		}
		return set_str(c->cors_allow_origin, sizeof(c->cors_allow_origin), key, v, err, errlen);
	}
	if (strcmp(key, "store_sync") == 0) {
		if (strcmp(v, "full") != 0 && strcmp(v, "normal") != 0) {
			snprintf(err, errlen, "store_sync: expected full or normal, got '%s'", v);
			return -1;
		}
		c->store_sync_full = strcmp(v, "full") == 0;
		return 0;
	}
	for (size_t i = 0; i < sizeof(num_keys) / sizeof(num_keys[0]); i++) {
		const struct num_key *k = &num_keys[i];
		if (strcmp(key, k->key) != 0)
			continue;
		char *end;
		errno = 0;
		unsigned long long n = strtoull(v, &end, 10);
		if (errno || end == v || *end || v[0] == '-' || n < k->min || n > k->max) {
			snprintf(err, errlen, "%s: expected a whole number from %llu to %llu, got '%s'",
				 key, (unsigned long long)k->min, (unsigned long long)k->max, v);
			return -1;
		}
		*(uint64_t *)((char *)c + k->off) = n;
		return 0;
	}
	snprintf(err, errlen, "unknown setting '%s'", key);
	return -1;
}

static char *trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	char *e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = 0;
	return s;
}

int config_load_file(struct tern_config *c, const char *path, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen, "cannot read config %s: %s", path, strerror(errno));
		return -1;
	}
	char line[2048], msg[512];
	int lineno = 0, rc = 0;
	while (fgets(line, sizeof(line), f)) {
		lineno++;
		if (!strchr(line, '\n') && !feof(f)) {
			snprintf(err, errlen, "%s:%d: line too long", path, lineno);
			rc = -1;
			break;
		}
		char *hash = strchr(line, '#');
		if (hash)
			*hash = 0;
		char *s = trim(line);
		if (!*s)
			continue;
		char *sp = s;
		while (*sp && !isspace((unsigned char)*sp))
			sp++;
		if (!*sp) {
			snprintf(err, errlen, "%s:%d: '%s' has no value", path, lineno, s);
			rc = -1;
			break;
		}
		*sp = 0;
		if (config_set(c, s, trim(sp + 1), msg, sizeof(msg)) != 0) {
			snprintf(err, errlen, "%s:%d: %s", path, lineno, msg);
			rc = -1;
			break;
		}
	}
	fclose(f);
	return rc;
}

int config_split_hostport(const char *s, char *host, size_t hostlen, int *port)
{
	const char *colon;
	size_t hl;
	if (s[0] == '[') {
		const char *rb = strchr(s, ']');
		if (!rb || rb[1] != ':')
			return -1;
		hl = (size_t)(rb - s - 1);
		if (hl == 0 || hl >= hostlen)
			return -1;
		memcpy(host, s + 1, hl);
		colon = rb + 1;
	} else {
		colon = strrchr(s, ':');
		if (!colon)
			return -1;
		hl = (size_t)(colon - s);
		if (hl == 0 || hl >= hostlen)
			return -1;
		memcpy(host, s, hl);
	}
	host[hl] = 0;
	char *end;
	long p = strtol(colon + 1, &end, 10);
	if (end == colon + 1 || *end || p < 0 || p > 65535)
		return -1;
	*port = (int)p;
	return 0;
}
