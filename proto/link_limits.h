/* Every limit of the link in one place, each with the reason for its value.
 * Runtime settings (link_config) are checked against the MIN/MAX pairs at link creation, and the
 * peer's settings against the same pairs when they arrive. */
#ifndef TERN_LINK_LIMITS_H
#define TERN_LINK_LIMITS_H

/* Preface: 7 bytes of magic then the version byte. Chosen so a listener can tell a link from
 * HTTP ("GET ", "POST", "PRI ") and TLS (0x16 0x03) by its first byte. */
#define LINK_PREFACE "TERNLK\r\x01"
#define LINK_PREFACE_BYTES 8
#define LINK_VERSION 1
#define LINK_ALPN "tern/1"

/* Frame header: length(4) type(1) flags(1) reserved(2) stream id(4), big endian. */
#define LINK_FRAME_HEADER_BYTES 12

/* Largest frame payload either side ever accepts; checked on the header, before any byte of the
 * payload is buffered. 64 KiB leaves room for a HEADERS frame with rich metadata. */
#define LINK_MAX_FRAME_BYTES (64u * 1024u)

/* DATA payload per stream per writer turn: small enough that 64 streams take turns within one
 * 1 MiB socket buffer, large enough that the 12-byte header costs < 0.1 %. (HTTP/2's 16 KiB.) */
#define LINK_DATA_CHUNK_BYTES (16u * 1024u)

/* Per-stream receive window. The protocol default (what a sender may assume before the peer's
 * settings arrive) is the minimum; 1 MiB keeps a 10 Gbit/s, 0.5 ms datacenter path busy. */
#define LINK_STREAM_WINDOW_MIN (64u * 1024u)
#define LINK_STREAM_WINDOW_DEFAULT (1024u * 1024u)
#define LINK_STREAM_WINDOW_MAX (16u * 1024u * 1024u)

/* Worst-case receive memory of one link is max_streams x stream_window (every stream parked
 * with a full window): 1 GiB with the defaults below, reachable only by a peer that opens every
 * stream and stalls each one mid-message (or an application that pauses them all). Links join
 * authenticated cluster members; for less trusted peers lower max_streams and stream_window. */

/* Per-link receive window: bounds bytes in flight on the link. Credit is returned as soon as bytes
 * move into a stream's buffer (bounded by that stream's window), so one stalled reader never
 * holds link credit (LINK.md pitfall 1). */
#define LINK_LINK_WINDOW_MIN (1024u * 1024u)
#define LINK_LINK_WINDOW_DEFAULT (16u * 1024u * 1024u)
#define LINK_LINK_WINDOW_MAX (1024u * 1024u * 1024u)

/* Largest message (one protobuf). Must fit the stream window with its 4-byte prefix, or a
 * partially received message could never be completed. */
#define LINK_MAX_MESSAGE_MIN 1024u
#define LINK_MAX_MESSAGE_DEFAULT (512u * 1024u)
#define LINK_MAX_MESSAGE_MAX (16u * 1024u * 1024u - 4u)
/* Before the peer's settings arrive a sender assumes this limit for the peer. */
#define LINK_MAX_MESSAGE_PROTOCOL (60u * 1024u)

/* Concurrent streams a side accepts from its peer; excess opens are refused (retryable). */
#define LINK_MAX_STREAMS_MIN 1u
#define LINK_MAX_STREAMS_DEFAULT 1024u
#define LINK_MAX_STREAMS_MAX 65536u
/* What a sender assumes before the peer's settings arrive (HTTP/2 recommends >= 100). */
#define LINK_MAX_STREAMS_PROTOCOL 100u

/* Bytes a stream may hold queued for sending before link_call_send returns -EAGAIN; the
 * application then waits for on_writable (called once below half). */
#define LINK_STREAM_SENDBUF_DEFAULT (1024u * 1024u)
#define LINK_STREAM_SENDBUF_MAX (64u * 1024u * 1024u)

/* Write buffers handed to libuv at once: at most COUNT * BYTES sit inside libuv/TLS, so a ping
 * queued now waits behind at most 256 KiB (LINK.md pitfall 4). */
#define LINK_WBUF_BYTES (64u * 1024u)
#define LINK_WBUF_COUNT 4
/* TLS record overhead for LINK_WBUF_BYTES of plaintext is < 400 bytes (4 records). */
#define LINK_TLS_OVERHEAD_BYTES 4096u

/* Plaintext read buffer: two full frames plus one socket read. */
#define LINK_RBUF_BYTES (256u * 1024u)
#define LINK_TLS_READ_BYTES (64u * 1024u)

/* Control frames queued for sending (pongs, window updates, resets, settings acks). A peer that
 * makes us queue more is flooding (nghttp2 caps queued acks at 1000): the link is closed. */
#define LINK_CTRL_BYTES (64u * 1024u)
#define LINK_MAX_QUEUED_CONTROL 1000u

/* Resets and refused opens the peer may cause per second before the link is closed
 * (CVE-2023-44487, rapid reset). */
#define LINK_RESETS_PER_S_DEFAULT 2000u
#define LINK_RESETS_PER_S_MIN 10u

/* Heartbeats: ping interval and missed intervals before the link is declared dead. */
#define LINK_PING_INTERVAL_MS_DEFAULT 1000u
#define LINK_PING_INTERVAL_MS_MIN 10u
#define LINK_PING_INTERVAL_MS_MAX 600000u
#define LINK_DEAD_AFTER_DEFAULT 3u
#define LINK_DEAD_AFTER_MIN 2u
#define LINK_DEAD_AFTER_MAX 100u
/* TCP connect + TLS + preface + settings must finish within this (NNG's 10 s negotiation). */
#define LINK_HANDSHAKE_TIMEOUT_MS_DEFAULT 10000u
/* After a protocol error the goaway gets this long to flush before the socket is cut. */
#define LINK_LINGER_MS 1000u

/* Status and goaway texts and details are copied; longer ones are truncated or refused. */
#define LINK_STATUS_MSG_MAX 256u
#define LINK_STATUS_DETAIL_MAX 4096u
#define LINK_GOAWAY_TEXT_MAX 256u
/* A call's method name "package.Service/Method" and metadata. */
#define LINK_METHOD_MAX 200u
#define LINK_METADATA_MAX 32u

/* Bytes of protobuf scratch per call for decoded messages before falling back to the heap, and the
 * hard cap on what one decoded message may take (protobuf-c's structs are larger than the wire). */
#define LINK_ARENA_INLINE_BYTES 512u
#define LINK_ARENA_MAX_BYTES (64u * 1024u * 1024u)
/* Small messages are queued in the call's inline buffer, no heap allocation. */
#define LINK_CALL_INLINE_BYTES 512u

/* Links one listener holds at once (each costs ~0.7 MiB of buffers); connections above are
 * accepted and closed at once, so a connection flood cannot exhaust memory. */
#define LINK_LISTENER_MAX_LINKS_DEFAULT 4096u

/* Services and methods one router holds; interceptors per link. */
#define LINK_ROUTER_MAX_METHODS 512u
#define LINK_MAX_INTERCEPTORS 8u

/* Redial backoff: base doubles per failed attempt up to max, jittered to [d/2, d]. */
#define LINK_BACKOFF_BASE_MS_DEFAULT 100u
#define LINK_BACKOFF_MAX_MS_DEFAULT 10000u
#define LINK_BACKOFF_BASE_MS_MIN 1u

#endif
