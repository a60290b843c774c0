/* libFuzzer target for the link's frame decoder (tests/fuzz/link.cmake).
 * Each input goes twice through the code that reads a peer's bytes:
 *   1. the pure codec: frame headers, fixed payloads, preface, message splitting, and the
 *      protobuf payloads (settings, call header, status) decoded as the link decodes them;
 *   2. a real link (not connected, nothing leaves it) whose read buffer receives the input after
 *      a valid preface and settings when the first byte is odd: every frame handler, stream
 *      creation through a router, flow control and the limits run on it.
 * The process must neither crash nor leak; a clean error is the only acceptable outcome. */
#include <stdint.h>
#include <string.h>

#include "link_internal.h"

static void unary_msg(link_call *c, const ProtobufCMessage *m, void *ud) {
  (void)ud;
  link_call_reply(c, m);
}
static void half(link_call *c, void *ud) {
  (void)ud;
  link_status ok = {.code = LINK_OK};
  link_call_finish(c, &ok);
}
static const link_call_cbs unary_cbs = {.on_msg = unary_msg};
static const link_call_cbs stream_cbs = {.on_msg = NULL, .on_half_close = half};
static link_router *router;

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc, (void)argv;
  const ProtobufCServiceDescriptor *d = &tern__link__link_diag__descriptor;
  if (link_router_new(&router) != 0) return 1;
  link_router_add(router, d, "Unary", &unary_cbs, NULL);
  link_router_add(router, d, "ServerStream", &stream_cbs, NULL);
  link_router_add(router, d, "ClientStream", &stream_cbs, NULL);
  link_router_add(router, d, "Bidi", &stream_cbs, NULL);
  return 0;
}

static void decode_all(const uint8_t *data, size_t size) {
  link_preface_check(data, size);
  size_t off = 0;
  link_frame f;
  long n;
  while ((n = link_frame_decode(data + off, size - off, LINK_MAX_FRAME_BYTES, &f)) > 0) {
    uint32_t a, b;
    const uint8_t *text;
    size_t tlen;
    uint8_t mem[512];
    link_arena ar;
    link_arena_init(&ar, mem, sizeof(mem));
    switch (f.type) {
    case LINK_FRAME_WINDOW: link_frame_window(&f, &a); break;
    case LINK_FRAME_RESET: link_frame_reset(&f, &a, &b); break;
    case LINK_FRAME_GOAWAY: link_frame_goaway(&f, &a, &b, &text, &tlen); break;
    case LINK_FRAME_SETTINGS: tern__link__settings__unpack(&ar.pa, f.length, f.payload); break;
    case LINK_FRAME_HEADERS: tern__link__call_header__unpack(&ar.pa, f.length, f.payload); break;
    case LINK_FRAME_STATUS: tern__link__status__unpack(&ar.pa, f.length, f.payload); break;
    case LINK_FRAME_DATA: {
      const uint8_t *m;
      uint32_t mlen;
      size_t p = 0;
      long k;
      while ((k = link_msg_next(f.payload + p, f.length - p, 1u << 20, &m, &mlen)) > 0)
        p += (size_t)k;
      break;
    }
    default: break;
    }
    link_arena_reset(&ar);
    off += (size_t)n;
  }
}

static size_t hello(uint8_t *out) {
  memcpy(out, LINK_PREFACE, LINK_PREFACE_BYTES);
  Tern__Link__Settings s = TERN__LINK__SETTINGS__INIT;
  s.version = LINK_VERSION;
  s.max_streams = 8;
  size_t n = tern__link__settings__pack(&s, out + LINK_PREFACE_BYTES + LINK_FRAME_HEADER_BYTES);
  link_frame_header_put(out + LINK_PREFACE_BYTES, (uint32_t)n, LINK_FRAME_SETTINGS, 0, 0);
  return LINK_PREFACE_BYTES + LINK_FRAME_HEADER_BYTES + n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  decode_all(data, size);
  if (size < 1 || size > LINK_RBUF_BYTES / 2) return 0;
  uv_loop_t loop;
  if (uv_loop_init(&loop) != 0) return 0;
  link_config cfg = {.router = router, .max_streams = 8, .resets_per_s = 50,
                     .stream_window = 64 * 1024, .max_message = 16 * 1024};
  tern_link *l;
  if (link_create(&loop, &cfg, (data[0] & 2) != 0, &l) == 0) {
    size_t n = (data[0] & 1) ? hello(l->rbuf) : 0;
    memcpy(l->rbuf + n, data + 1, size - 1);
    l->rlen = n + size - 1;
    link_process(l);
    if (!l->closing) {
      link_calls_drain_resumed(l);
      link_calls_reap(l);
    }
    link_close(l, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  uv_loop_close(&loop);
  return 0;
}
