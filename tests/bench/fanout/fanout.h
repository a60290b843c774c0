/*
 * Fan-out benchmark: the parts bench_fanout.c is built from.
 *
 * The harness is one libuv loop running libwebsockets clients: one publisher
 * and N subscribers on one channel of one broker on 127.0.0.1. Everything that
 * depends on which broker is measured sits behind struct fanout_broker_ops, so
 * the same harness can later measure Mosquitto (MQTT over WebSocket) or
 * nginx+nchan by adding a table, without touching the measuring code.
 */
#ifndef TERN_BENCH_FANOUT_H
#define TERN_BENCH_FANOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- broker operations ------------------------------------------------ */

enum fanout_frame_kind {
	FANOUT_FRAME_OTHER = 0, /* anything the harness ignores (heartbeat, pong) */
	FANOUT_FRAME_CONNECTED, /* the broker's greeting */
	FANOUT_FRAME_OK,        /* success reply to a frame that carried `ref` */
	FANOUT_FRAME_ERROR,     /* error reply, with or without `ref` */
	FANOUT_FRAME_MESSAGE,   /* one delivery of a channel message */
	FANOUT_FRAME_BAD,       /* not parseable: counted as a protocol error */
};

/* What ops->parse extracts from one complete frame. `data` points into the
 * frame (valid until the frame buffer is reused) and holds the payload bytes
 * exactly as the harness handed them to ops->publish. */
struct fanout_frame {
	enum fanout_frame_kind kind;
	int64_t ref;      /* OK/ERROR: the echoed ref, -1 when absent */
	uint64_t seq;     /* OK: the channel's seq (subscribe: last, publish: new);
			     MESSAGE: the message's seq; 0 when the broker has none */
	const char *data; /* MESSAGE: payload */
	size_t data_len;
};

/* How the publisher reaches the broker. */
enum fanout_pub_transport {
	FANOUT_PUB_WEBSOCKET = 0, /* a WebSocket client like the subscribers */
	FANOUT_PUB_HTTP_POST,     /* HTTP/1.1 keep-alive, pipelined requests
				     (fanout/http_pub.h); ops->publish builds
				     the whole request, each reply is the OK
				     (2xx) or ERROR of the oldest request */
};

/*
 * One broker as the harness sees it. Frame builders write at most `cap` bytes
 * into `buf` and return the length written, 0 when there is nothing to send,
 * or -1 when `cap` is too small. They never allocate.
 */
struct fanout_broker_ops {
	const char *name;
	/* WebSocket subprotocol offered, NULL for none. */
	const char *subprotocol;
	/* true: frames are binary (MQTT); false: text (JSON brokers). */
	bool binary;
	/* Bytes the broker counts as message size beyond the raw payload
	 * (Tern counts the JSON text of `data`: a string adds its 2 quotes). */
	size_t data_overhead;
	/* URL path a subscriber (publisher) connects to for `channel`. */
	int (*sub_path)(char *buf, size_t cap, const char *channel);
	int (*pub_path)(char *buf, size_t cap, const char *channel);
	/* First frame on every connection, before subscribe or publish
	 * (MQTT CONNECT); NULL when the protocol has none. */
	int (*hello)(char *buf, size_t cap, uint32_t conn_id);
	/* Subscribe to `channel`, asking for an OK carrying `ref`. Returns 0 when
	 * the path alone subscribes (nchan); the harness then treats the
	 * WebSocket handshake as the OK. */
	int (*subscribe)(char *buf, size_t cap, const char *channel, uint32_t ref);
	/* Publish `payload` on `channel`; the broker's OK must carry `ref`. */
	int (*publish)(char *buf, size_t cap, const char *channel, uint64_t ref,
		       const char *payload, size_t payload_len);
	/* Classify one complete frame. Returns 0, or -1 for a frame it cannot
	 * read (then out->kind is FANOUT_FRAME_BAD). */
	int (*parse)(const char *frame, size_t len, struct fanout_frame *out);
	/* FANOUT_PUB_WEBSOCKET unless set. */
	enum fanout_pub_transport pub_transport;
	/* true when the broker never answers a publish (MQTT QoS 0): the
	 * harness counts a publish as acknowledged once it is written. */
	bool publish_unacked;
};

/* Tern's WebSocket JSON protocol (CONTRACT.md, `tern.v1.json`). */
extern const struct fanout_broker_ops fanout_broker_tern;
/* Mosquitto: MQTT 3.1.1 over WebSocket (subprotocol "mqtt"), QoS 0. */
extern const struct fanout_broker_ops fanout_broker_mosquitto;
/* nginx + nchan: WebSocket subscribers on /sub/CHANNEL, HTTP POST publishes
 * to /pub/CHANNEL. */
extern const struct fanout_broker_ops fanout_broker_nchan;

/* The broker table named `name`, or NULL. */
const struct fanout_broker_ops *fanout_broker_find(const char *name);

/* ---- payload ------------------------------------------------------------ */

/* Smallest payload: 16 hex digits of index, 16 of send time. */
#define FANOUT_PAYLOAD_MIN 32

/* Writes `len` (>= FANOUT_PAYLOAD_MIN) printable bytes carrying the message
 * index and its CLOCK_MONOTONIC send time, padded with '.'. No quotes,
 * backslashes or control characters, so it is a valid JSON string body. */
void fanout_payload_make(char *buf, size_t len, uint64_t index, uint64_t sent_ns);

/* Reads back what fanout_payload_make wrote. Returns 0, or -1 when the bytes
 * are not a payload of ours. */
int fanout_payload_read(const char *buf, size_t len, uint64_t *index, uint64_t *sent_ns);

/* ---- latency histogram ---------------------------------------------------- */

/* Log-linear buckets as in HdrHistogram: exact below 128 ns, then 64 linear
 * sub-buckets per power of two, so any recorded value is known within 1/64
 * (1.6 %). Covers up to 2^40 ns (18 min); larger values land in the top. */
#define FANOUT_HIST_SUB_BITS 6
#define FANOUT_HIST_BUCKETS (128 + 34 * 64)

struct fanout_hist {
	uint64_t count;
	uint64_t max_ns;
	uint64_t min_ns;
	uint64_t buckets[FANOUT_HIST_BUCKETS];
};

void fanout_hist_init(struct fanout_hist *h);
void fanout_hist_record(struct fanout_hist *h, uint64_t value_ns);
/* Value at quantile q (0..1]: the upper bound of the bucket holding it, so
 * never under the true value. 0 when empty. */
uint64_t fanout_hist_quantile(const struct fanout_hist *h, double q);

/* ---- /proc readings --------------------------------------------------------- */

struct fanout_proc_cpu {
	uint64_t user_us;
	uint64_t sys_us;
	uint64_t oncpu_ns;      /* schedstat: on a CPU, all threads (0 if unknown) */
	uint64_t runq_wait_ns;  /* schedstat: runnable but waiting for a CPU */
};

/* utime and stime of process `pid` from /proc/PID/stat, in µs (resolution
 * 1/CLK_TCK, 10 ms on Debian kernels), and from each /proc/PID/task/TID/schedstat
 * its time on a CPU and waiting for one, in ns, summed over its threads
 * (threads that ended are missing from the sums). Returns 0 or -errno. */
int fanout_proc_cpu(int pid, struct fanout_proc_cpu *out);
/* VmRSS of `pid` from /proc/PID/status, in bytes. Returns 0 or -errno. */
int fanout_proc_rss(int pid, uint64_t *rss_bytes);
/* The same summed over the `n` processes in `pids` and their children (found
 * by PPid in /proc/N/status), each process once, so that a broker of a master
 * and workers (nginx) or of several processes (Tern's node and edge) counts
 * whole. Children that start or end between two readings skew the
 * difference; the brokers measured fork theirs at start. Returns 0, or -errno
 * of the first pid in `pids` that cannot be read. */
int fanout_proc_set_cpu(const int *pids, size_t n, struct fanout_proc_cpu *out);
int fanout_proc_set_rss(const int *pids, size_t n, uint64_t *rss_bytes);
/* This process's own user and system CPU (getrusage), in µs. */
void fanout_self_cpu(struct fanout_proc_cpu *out);

/* Raises RLIMIT_NOFILE to its hard limit; says on stderr when that is still
 * below `need`. */
void fanout_raise_nofile(uint32_t need);

/* CLOCK_MONOTONIC in ns. */
uint64_t fanout_now_ns(void);

/* ---- one workload ------------------------------------------------------------ */

enum fanout_mode {
	FANOUT_MODE_INFLIGHT1, /* next publish once every subscriber has the last */
	FANOUT_MODE_RATE,      /* publish at a fixed rate, in bursts, pipelined */
};

/* Subscribers in one run, at most: 200 000 connections need as many
 * descriptors (ulimit -Hn) and, on loopback, ephemeral ports (about 28 000
 * per source address: --source-addrs). */
#define FANOUT_SUBSCRIBERS_MAX 200000
/* Local addresses subscribers connect from, at most (--source-addrs). */
#define FANOUT_SOURCE_ADDRS_MAX 64
/* Broker processes a run can measure at once (--server-pid, repeatable). */
#define FANOUT_SERVER_PIDS_MAX 8

struct fanout_shared; /* fanout/procs.h */

/* A workload. Every phase has a bound in count and time, so a broker that
 * loses messages or connections ends the run with a failure, never a hang. */
struct fanout_config {
	const struct fanout_broker_ops *ops;
	const char *host;             /* numeric IPv4 address */
	int port;
	const char *channel;          /* [A-Za-z0-9:._-], fresh per run */
	uint32_t channels;            /* 0 or 1: all on `channel`; more: channel
					 "CHANNEL-k", subscriber i on k = i % channels,
					 message i published on k = i % channels */
	uint32_t subscribers;
	enum fanout_mode mode;
	uint64_t messages;            /* published at most */
	double rate;                  /* RATE: messages per second */
	uint32_t burst;               /* RATE: messages sent back to back per tick */
	uint32_t window;              /* publishes awaiting their OK, at most */
	uint64_t backlog_max;         /* RATE: messages not yet delivered to all,
					 at most, before the publisher holds */
	uint32_t msg_bytes;           /* size of a message as the broker counts it */
	uint32_t duration_ms;         /* publish phase, at most */
	uint32_t connect_rate;        /* new connections per second */
	uint32_t connect_concurrency; /* handshakes under way, at most */
	uint32_t connect_timeout_ms;  /* whole connect-and-subscribe phase */
	uint32_t settle_ms;           /* idle wait before reading RSS */
	uint32_t drain_timeout_ms;    /* after the last publish, without progress */
	uint32_t drain_max_ms;        /* after the last publish, at most */
	uint32_t message_timeout_ms;  /* INFLIGHT1: one message to reach everyone */
	int server_pids[FANOUT_SERVER_PIDS_MAX]; /* the broker's processes: CPU
					 and RSS are summed over them and
					 their children */
	uint32_t server_pid_count;    /* 0: no broker CPU or RSS figures */
	const char *const *source_addrs; /* numeric IPv4: subscriber i binds
					 source_addrs[i % nsource_addrs] */
	uint32_t nsource_addrs;       /* 0: the kernel picks (127.0.0.1) */
	bool verbose;
	/* NULL: this process holds every subscriber. Else the run is spread
	 * over several processes (fanout/procs.h): this one is number `proc`
	 * (0: the parent, which publishes) and holds subscribers sub_first ..
	 * sub_first + sub_count - 1; ids, channels and source addresses stay
	 * those of the global index. connect_rate and connect_concurrency are
	 * then this process's share. INFLIGHT1 only. */
	struct fanout_shared *shared;
	uint32_t proc;
	uint32_t sub_first, sub_count;
};

struct fanout_result {
	bool pass;
	char reason[160];
	uint32_t subscribed;        /* subscribers whose subscribe got its OK */
	uint32_t connect_failed;    /* connections refused, reset or timed out */
	uint32_t closed_by_broker;  /* subscribers closed during the run */
	uint32_t slow_consumer;     /* ... of which with close code 4008 */
	uint64_t published;         /* publish frames sent */
	uint64_t acked;             /* OKs to them */
	uint64_t publish_errors;    /* error replies to them */
	uint64_t expected;          /* published x subscribed on its channel */
	uint64_t deliveries;        /* distinct (subscriber, message) deliveries */
	uint64_t lost;              /* expected - deliveries */
	uint64_t duplicated;        /* deliveries of a message already seen */
	uint64_t reordered;         /* deliveries older than one already seen */
	uint64_t seq_gaps;          /* jumps of the channel seq over a subscriber's count */
	uint64_t seq_mismatch;      /* delivery seq differs from the publisher's OK */
	uint64_t errors;            /* error frames on subscriber connections */
	uint64_t bad_frames;        /* frames ops->parse could not read */
	uint64_t connect_ns;        /* subscribers: first connect to last OK */
	uint64_t publish_ns;        /* first publish to last send */
	uint64_t deliver_ns;        /* first publish to last delivery */
	double publish_rate;        /* messages per second achieved */
	uint64_t held_ticks;        /* RATE: ticks the backlog bound held the publisher */
	struct fanout_hist latency; /* publish send to delivery, per delivery */
	struct fanout_hist ack;     /* publish send to its OK */
	bool have_server;           /* the figures below are valid */
	struct fanout_proc_cpu broker_cpu;  /* during publish and drain */
	struct fanout_proc_cpu broker_connect_cpu; /* during connect-and-subscribe */
	uint64_t rss_before, rss_after;     /* around connect-and-subscribe + settle */
	struct fanout_proc_cpu harness_cpu; /* this process, during publish and drain */
};

/* The kernel's floor: CPU µs per message that one process spends in send()
 * to N loopback TCP connections, back to back with 1, 8 and 32 messages of
 * `msg_bytes` per send() (us_per_msg[0..2]), and with one message in flight
 * (us_per_msg[3]: one message to each connection, then asleep until the
 * receiver has them all), each the median of three rounds of about a second.
 * Forks a child that drains the other ends. Returns 0 or a negative errno. */
int fanout_floor(uint32_t n, uint32_t msg_bytes, double us_per_msg[4]);

/* Runs one workload on a fresh loop. Fills `res` whatever happens; returns 0
 * when the run could be carried out (then res->pass says whether the broker
 * passed), or a negative errno when the harness itself could not start. */
int fanout_run(const struct fanout_config *cfg, struct fanout_result *res);

#endif
