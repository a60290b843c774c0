/* Runtime configuration: defaults, a config file of `key value` lines (# starts
 * a comment), and command-line flags that override it. Every numeric value is
 * checked against the hard bounds in limits.h at load. */
#ifndef TERN_CONFIG_H
#define TERN_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct tern_config {
	char listen[256];   /* HOST:PORT for clients */
	char data_dir[1024];
	char cors_allow_origin[256]; /* REST's Access-Control-Allow-Origin; "" = none */
	uint64_t max_message_bytes;
	uint64_t history_max_messages;
	uint64_t history_max_age_s;
	uint64_t heartbeat_ms;
	uint64_t flush_linger_ms; /* edge: write pacing while behind (0: off) */
	uint64_t session_queue_max_bytes;
	uint64_t idempotency_window_s;
	uint64_t rest_max_body_bytes;
	uint64_t handshake_timeout_s;
	uint64_t store_sweep_interval_ms;
	uint64_t queue_max_depth;
	bool store_sync_full;
	/* Cluster (tern node / tern edge; tern dev uses the same link inside). */
	char node_id[64];   /* this process's id (node: --id; edge: --id or a generated one) */
	char region[64];
	char nodes[1024];   /* edge: comma-separated HOST:PORT of the nodes it links to */
	char join[1024];    /* node: peers to join (accepted, not used yet) */
	bool listen_set;    /* listen was given (flag or file), not the default */
	uint64_t links;     /* edge: data links per node (K) */
	uint64_t workers;   /* edge: processes sharing the client port (edge_workers.h) */
	uint64_t node_timeout_ms; /* a node whose control link reads nothing this long is down */
	int log_calls;      /* enum tern_log_calls */
};

enum tern_log_calls { TERN_LOG_CALLS_ERRORS = 0, TERN_LOG_CALLS_ALL = 1, TERN_LOG_CALLS_OFF = 2 };

void config_defaults(struct tern_config *c);

/* Sets one key. Returns 0, or -1 with a one-line reason in err. */
int config_set(struct tern_config *c, const char *key, const char *value, char *err, size_t errlen);

/* Reads a config file. Returns 0, or -1 with "FILE:LINE: reason" in err. */
int config_load_file(struct tern_config *c, const char *path, char *err, size_t errlen);

/* Splits "HOST:PORT" ("[v6]:PORT" too). Returns 0 or -1. */
int config_split_hostport(const char *s, char *host, size_t hostlen, int *port);

#endif
