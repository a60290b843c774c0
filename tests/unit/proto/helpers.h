/* Shared test fixture for the link tests: a loop, a listener serving tern.link.LinkDiag, a
 * client link, TLS material made at test time, and a raw socket peer for hostile input. */
#ifndef TERN_TEST_LINK_HELPERS_H
#define TERN_TEST_LINK_HELPERS_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include <cmocka.h>

#include "link.h"
#include "link_call.h"
#include "link_frame.h"
#include "tern/link.pb-c.h"

#include "tern_assert.h"

#define DIAG (&tern__link__link_diag__descriptor)

/* Server-side state of the LinkDiag handlers. */
typedef struct diag {
  uint64_t unary, server_streams, client_streams, bidis;
  uint64_t done_ok, done_cancelled, done_deadline, done_other;
  uint8_t *executed;       /* executed[id]++ for Unary ids below executed_cap */
  size_t executed_cap;
  uint64_t nested_remaining_us;
  char nested_trace[64];
  char md_seen[64];
  link_call *hung;         /* the last Unary left hanging (delay_ms != 0) */
} diag;

/* Client-side record of one call. */
typedef struct cstate {
  int done, code, retryable;
  char msg[160];
  uint64_t msgs, bytes, last_id, last_count;
  uint8_t detail[64];
  size_t detail_len;
} cstate;

extern const link_call_cbs cstate_cbs; /* on_msg counts Echo messages, on_done records */
void cstate_unary_done(link_call *c, const link_status *st, const ProtobufCMessage *resp,
                       void *ud);

/* Fills r with the four LinkDiag methods served by the handlers above. */
void diag_route(link_router *r, diag *d);

typedef struct fx {
  uv_loop_t loop;
  uv_timer_t tick;
  link_router *router;
  diag d;
  link_listener *lst;
  int port;
  tern_link *srv;          /* last link accepted */
  int srv_accepted, srv_closed, srv_ready;
  link_status srv_close_st;
  tern_link *cli;
  int cli_ready, cli_closed;
  link_status cli_close_st;
  char cli_close_msg[256];
  link_tls *stls, *ctls;
  char certdir[128];
  link_config scfg, ccfg;
} fx;

/* Sets up loop, router and configs; with tls != 0 makes certificates and TLS contexts
 * (mutual authentication). */
void fx_init(fx *f, int tls);
/* Starts the listener on scfg at port (0: any); accepted links land in f->srv. */
void fx_listen(fx *f, int port);
/* Starts the listener (scfg) and dials the client (ccfg); waits until the client is ready. */
void fx_start(fx *f);
/* Runs the loop until *flag becomes non-zero or timeout_ms passes. Returns 1 if it did. */
int fx_run_until(fx *f, const int *flag, uint64_t timeout_ms);
int fx_run_until_u64(fx *f, const uint64_t *v, uint64_t want, uint64_t timeout_ms);
void fx_run_ms(fx *f, uint64_t ms);
/* Closes everything and asserts the loop closes cleanly (a leaked handle fails). */
void fx_finish(fx *f);
/* Generates CA, server and client certificates into dir with the openssl CLI. */
int certs_make(char *dir, size_t len);
void certs_remove(const char *dir);

/* Wedges a link as a hung process would: it stops reading, writing and pinging (test only). */
void test_link_freeze(tern_link *l);

/* A raw TCP peer: writes bytes, records what comes back and whether the peer closed. */
typedef struct rawpeer {
  uv_tcp_t tcp;
  uv_connect_t creq;
  uv_write_t wreq;
  uv_shutdown_t sreq;
  uint8_t out[256 * 1024];
  size_t outlen;
  uint8_t in[512 * 1024];
  size_t inlen;
  int connected, eof, closed, shutdown_after_write;
} rawpeer;

/* Connects to 127.0.0.1:port and sends the out bytes once connected. */
void raw_start(fx *f, rawpeer *r, int port);
void raw_close(rawpeer *r);
/* Appends the preface and a valid settings frame to r->out. */
void raw_put_hello(rawpeer *r);
void raw_put(rawpeer *r, const void *p, size_t n);
void raw_put_frame(rawpeer *r, uint8_t type, uint8_t flags, uint32_t id, const void *p,
                   uint32_t n);
/* Whether the bytes received hold a GOAWAY frame (after the peer's preface). */
int raw_saw_frame(const rawpeer *r, uint8_t type);

#endif
