/* Every limit Tern enforces, in one place, each with the reason for its value.
 * Runtime config (config.h) may move a configurable limit between its _MIN and
 * _MAX; values outside are refused at load, as nginx checks its directives. */
#ifndef TERN_LIMITS_H
#define TERN_LIMITS_H

/* Names: the contract says 1-255 bytes; queues stop at 250 so "{q}.dlq" fits. */
#define TERN_NAME_MAX_BYTES 255
#define TERN_QUEUE_NAME_MAX_BYTES 250

/* Message data size (contract default 64 KiB). The floor keeps room for the
 * smallest useful JSON; the ceiling keeps one frame well under SQLite's 1 GB
 * blob limit and a session's outbound bound. */
#define TERN_MESSAGE_BYTES_DEFAULT (64 * 1024)
#define TERN_MESSAGE_BYTES_MIN 64
#define TERN_MESSAGE_BYTES_MAX (16 * 1024 * 1024)

/* An event name is metadata, not payload: short on purpose. */
#define TERN_EVENT_NAME_MAX_BYTES 255
/* Idempotency keys: long enough for a UUID plus a prefix, short enough to index. */
#define TERN_IDEM_KEY_MAX_BYTES 128

/* History retention (contract: at least the last 1000 messages or 24 hours). */
#define TERN_HISTORY_MESSAGES_DEFAULT 1000
#define TERN_HISTORY_AGE_S_DEFAULT (24 * 3600)
/* One history read returns at most this many messages (REST `limit` 1-1000);
 * a subscriber catching up from an older seq is served page by page. */
#define TERN_HISTORY_PAGE_MAX 1000
#define TERN_HISTORY_PAGE_DEFAULT 100

/* Idempotency window (contract: 2 minutes). */
#define TERN_IDEM_WINDOW_S_DEFAULT 120

/* Store thread: one transaction takes at most this many ops / bytes so one
 * commit's latency stays bounded while the queue behind it still batches. */
#define TERN_STORE_BATCH_OPS 4096
#define TERN_STORE_BATCH_BYTES (8 * 1024 * 1024)
/* Writes waiting for the store thread. Past this, publish gets 50300
 * (retryable): the disk is the bottleneck and memory must not absorb it. */
#define TERN_STORE_QUEUE_BYTES_DEFAULT (64 * 1024 * 1024)
#define TERN_STORE_QUEUE_OPS_MAX 65536
/* WAL pages (4 KiB) that wake the checkpointer thread, and the bound past which the writer
 * checkpoints itself (a checkpointer that cannot keep up). */
#define TERN_STORE_CKPT_PAGES 1000
#define TERN_STORE_WAL_MAX_PAGES 16000
/* Passes one wake-up of the checkpointer makes at most while the writer keeps appending. */
#define TERN_STORE_CKPT_PASSES 8
/* The writer's own checkpoint retries this many times, 1 ms apart, while a pass of the
 * checkpointer finishes. */
#define TERN_STORE_WRITER_CKPT_TRIES 2000
/* How often expired history and idempotency keys are swept. */
#define TERN_STORE_SWEEP_MS 1000

/* Sessions. The outbound bound is what a slow subscriber may hold before it is
 * closed with 4008; 4 MiB is 64 full-size messages, or seconds of a busy feed. */
#define TERN_SESSION_QUEUE_BYTES_DEFAULT (4 * 1024 * 1024)
#define TERN_SESSION_QUEUE_BYTES_MIN (64 * 1024)
#define TERN_SESSION_QUEUE_BYTES_MAX (1024 * 1024 * 1024)
/* Frames queued to one session, whatever their size (a flood of tiny frames
 * must hit a bound too). */
#define TERN_SESSION_QUEUE_FRAMES_MAX 65536
/* Channels one connection may subscribe to. */
#define TERN_SESSION_SUBS_MAX 10000
/* Requests one connection may have in flight (publishes awaiting commit, history
 * reads); beyond it the connection stops being read until some complete. */
#define TERN_SESSION_INFLIGHT_MAX 1024
/* Frames written per writable callback: bounds one loop turn (libuv reads 32). */
#define TERN_SESSION_WRITES_PER_TURN 64

/* Sessions whose queued frames are written in one loop turn, at most. A
 * broadcast to 100 000 idle sessions is about a second of send() calls; in
 * slices of 4 096 (tens of ms) the loop still reads links, heartbeats and new
 * clients in between, and the rest go out on the next turns, in order. */
#define TERN_EDGE_FLUSH_SESSIONS_PER_TURN 4096

/* Bytes of queued frames gathered into one socket write (sendmsg straight from
 * the shared frames, nothing copied; at most TERN_SESSION_WRITES_PER_TURN frames).
 * A write's fixed cost in the kernel is several µs on loopback, so with 4 KiB
 * messages 64 KiB (16 frames) was not yet past it: 256 KiB took CPU per delivery
 * from about 2.6 to 2.1 µs (bench_fanout n1000-rate-4k). A single larger frame is
 * written on its own. */
#define TERN_EDGE_WRITE_BATCH_BYTES (256 * 1024)
/* Descriptors that must be free when an edge starts its WebSocket server: lws needs
 * two or three, and a few clients should fit; with fewer the start fails. */
#define TERN_EDGE_FDS_SPARE_MIN 8
/* Frames per session, on average over one flush, at which the edge is behind and its next
 * flush lingers (config flush_linger_ms, default below; 0 turns lingering off). */
#define TERN_EDGE_LINGER_FRAMES 2
/* ... and messages per second per session, on average, below which the edge keeps up. */
#define TERN_EDGE_LINGER_RATE 200
/* ... and the time one flush must take for lingering to be worth its latency: writing to
 * a few clients is cheap however often it happens. */
#define TERN_EDGE_LINGER_BUSY_US 1000
#define TERN_FLUSH_LINGER_MS_DEFAULT 25
#define TERN_FLUSH_LINGER_MS_MAX 1000

/* Queues (contract defaults: ack timeout 30 s, 5 attempts, prefetch 10, 1-1000). */
#define TERN_QUEUE_ACK_TIMEOUT_MS_DEFAULT 30000
#define TERN_QUEUE_ACK_TIMEOUT_MS_MIN 100
#define TERN_QUEUE_ACK_TIMEOUT_MS_MAX 3600000
#define TERN_QUEUE_ATTEMPTS_DEFAULT 5
#define TERN_QUEUE_ATTEMPTS_MAX 1000
#define TERN_QUEUE_PREFETCH_DEFAULT 10
#define TERN_QUEUE_PREFETCH_MAX 1000
#define TERN_QUEUE_PULL_MAX 1000
#define TERN_QUEUE_PULL_WAIT_MS_MAX 30000
/* Ready + unacked messages per queue; every message of a queue is held in
 * memory, so this bounds memory too. Beyond it enqueue gets 42900. */
#define TERN_QUEUE_DEPTH_DEFAULT 100000
#define TERN_QUEUE_DEPTH_MAX 10000000
/* Patterns one queue may bind; a publish checks every bound queue. */
#define TERN_QUEUE_BINDS_MAX 64
/* How often ack timeouts and pull waits are checked: the resolution of both. */
#define TERN_QUEUE_TICK_MS 50

/* Heartbeat (contract default 15 s). */
/* Edge to node links: K data links per node (tern edge --links). */
#define TERN_LINKS_DEFAULT 2
#define TERN_LINKS_MAX 16
/* Worker processes of one edge (tern edge --workers, edge_workers.h): each
 * holds its own clients and links; they share the client port. A worker must
 * listen within READY_MS of its start; one that dies is started again after a
 * pause of RESTART_MIN_MS, doubled (up to RESTART_MAX_MS) while workers die
 * younger than YOUNG_MS; after SIGTERM a worker has STOP_MS to drain. */
#define TERN_EDGE_WORKERS_MAX 64
#define TERN_EDGE_WORKER_READY_MS 10000
#define TERN_EDGE_WORKER_RESTART_MIN_MS 100
#define TERN_EDGE_WORKER_RESTART_MAX_MS 10000
#define TERN_EDGE_WORKER_YOUNG_MS 10000
#define TERN_EDGE_WORKER_STOP_MS (TERN_SHUTDOWN_GRACE_MS + 10000)
/* Nodes one edge links to (tern edge --nodes). */
#define TERN_NODES_MAX 64
/* A node whose control link has read nothing for this long is down: calls for its channels
 * get 50300 at once. The control link pings every quarter of it. */
#define TERN_NODE_TIMEOUT_MS_DEFAULT 2000
#define TERN_NODE_TIMEOUT_MS_MIN 200
#define TERN_NODE_TIMEOUT_MS_MAX 60000

#define TERN_HEARTBEAT_MS_DEFAULT 15000
#define TERN_HEARTBEAT_MS_MIN 100
#define TERN_HEARTBEAT_MS_MAX 300000

/* REST bodies: a batch of messages; checked against Content-Length before a
 * byte is buffered. */
#define TERN_REST_BODY_BYTES_DEFAULT (1024 * 1024)
#define TERN_REST_BODY_BYTES_MAX (256 * 1024 * 1024)
/* Messages in one REST publish batch. */
#define TERN_REST_BATCH_MAX 1000

/* HTTP / WebSocket handshakes and idle keep-alive connections end after this. */
#define TERN_HANDSHAKE_TIMEOUT_S_DEFAULT 10
#define TERN_HANDSHAKE_TIMEOUT_S_MIN 1
#define TERN_HANDSHAKE_TIMEOUT_S_MAX 300

/* Client connections an edge (tern edge, tern dev) is sized for, one
 * descriptor each, and the descriptors kept for everything else (links to
 * nodes, listeners, the store's files, HTTP requests). At start the soft
 * RLIMIT_NOFILE is raised to the hard one; below CLIENTS_TARGET + RESERVE the
 * edge says how many clients fit. Each idle WebSocket costs about 3 KiB of
 * RSS (docs/bench-idle.md), so 100 000 need about 300 MiB. */
#define TERN_EDGE_CLIENTS_TARGET 100000
#define TERN_NOFILE_RESERVE 1024
/* Soft RLIMIT_NOFILE, at most: lws 4.1 takes a limit above 10 000 000 as
 * unreasonable and sizes its tables for 2 560 descriptors instead. Its two
 * tables cost 16 bytes of address space per descriptor, touched only as
 * descriptors are used. */
#define TERN_NOFILE_MAX (8u * 1024 * 1024)

/* Graceful shutdown: clients get up to this long to answer the close frame. */
#define TERN_SHUTDOWN_GRACE_MS 5000

#endif
