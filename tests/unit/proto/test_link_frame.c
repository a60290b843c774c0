/* The frame codec: round trips, every header rule, lengths checked before buffering. */
#include <errno.h>
#include <string.h>

#include "helpers.h"

static void roundtrip(void **state) {
  uint8_t b[64];
  link_frame f;
  link_frame_header_put(b, 5, LINK_FRAME_DATA, LINK_FLAG_END, 7);
  memcpy(b + 12, "hello", 5);
  assert_int_equal(link_frame_decode(b, 17, LINK_MAX_FRAME_BYTES, &f), 17);
  assert_int_equal(f.length, 5);
  assert_int_equal(f.type, LINK_FRAME_DATA);
  assert_int_equal(f.flags, LINK_FLAG_END);
  assert_int_equal(f.stream_id, 7);
  assert_memory_equal(f.payload, "hello", 5);
  for (size_t i = 0; i < 17; i++) assert_int_equal(link_frame_decode(b, i, 1 << 16, &f), 0);

  uint32_t v, code, flags, last;
  assert_int_equal(link_frame_put_window(b, 3, 1000), 16);
  assert_int_equal(link_frame_decode(b, 16, 1 << 16, &f), 16);
  assert_int_equal(link_frame_window(&f, &v), 0);
  assert_int_equal(v, 1000);
  assert_int_equal(link_frame_put_reset(b, 9, LINK_CANCELLED, LINK_RESET_RETRYABLE), 20);
  assert_int_equal(link_frame_decode(b, 20, 1 << 16, &f), 20);
  assert_int_equal(link_frame_reset(&f, &code, &flags), 0);
  assert_int_equal(code, LINK_CANCELLED);
  assert_int_equal(flags, LINK_RESET_RETRYABLE);
  assert_int_equal(link_frame_put_ping(b, LINK_FLAG_ACK, 0x0102030405060708ull), 20);
  assert_int_equal(link_frame_decode(b, 20, 1 << 16, &f), 20);
  assert_int_equal(f.type, LINK_FRAME_PING);
  assert_int_equal(link_get_u32(f.payload + 4), 0x05060708u);
  const uint8_t *text;
  size_t tlen;
  size_t n = link_frame_put_goaway(b, 41, 0, "bye", 3);
  assert_int_equal(link_frame_decode(b, n, 1 << 16, &f), (long)n);
  assert_int_equal(link_frame_goaway(&f, &last, &code, &text, &tlen), 0);
  assert_int_equal(last, 41);
  assert_int_equal(tlen, 3);
  assert_memory_equal(text, "bye", 3);
}

static void rules(void **state) {
  uint8_t b[64] = {0};
  link_frame f;
  /* length beyond the maximum is refused from the header alone */
  link_frame_header_put(b, 0x7fffffff, LINK_FRAME_DATA, 0, 1);
  assert_int_equal(link_frame_decode(b, 12, LINK_MAX_FRAME_BYTES, &f), -EMSGSIZE);
  /* stream frames need a stream, link frames must not have one */
  link_frame_header_put(b, 0, LINK_FRAME_DATA, 0, 0);
  assert_int_equal(link_frame_decode(b, 12, 1 << 16, &f), -EPROTO);
  link_frame_header_put(b, 0, LINK_FRAME_HEADERS, 0, 0);
  assert_int_equal(link_frame_decode(b, 12, 1 << 16, &f), -EPROTO);
  link_frame_header_put(b, 8, LINK_FRAME_PING, 0, 1);
  assert_int_equal(link_frame_decode(b, 20, 1 << 16, &f), -EPROTO);
  link_frame_header_put(b, 0, LINK_FRAME_SETTINGS, 0, 3);
  assert_int_equal(link_frame_decode(b, 12, 1 << 16, &f), -EPROTO);
  /* fixed sizes */
  link_frame_header_put(b, 7, LINK_FRAME_PING, 0, 0);
  assert_int_equal(link_frame_decode(b, 19, 1 << 16, &f), -EPROTO);
  link_frame_header_put(b, 3, LINK_FRAME_WINDOW, 0, 0);
  assert_int_equal(link_frame_decode(b, 15, 1 << 16, &f), -EPROTO);
  link_frame_header_put(b, 4, LINK_FRAME_RESET, 0, 1);
  assert_int_equal(link_frame_decode(b, 16, 1 << 16, &f), -EPROTO);
  link_frame_header_put(b, 4, LINK_FRAME_GOAWAY, 0, 0);
  assert_int_equal(link_frame_decode(b, 16, 1 << 16, &f), -EPROTO);
  link_frame_header_put(b, 4, LINK_FRAME_SETTINGS, LINK_FLAG_ACK, 0);
  assert_int_equal(link_frame_decode(b, 16, 1 << 16, &f), -EPROTO);
  /* reserved stream id bit */
  link_frame_header_put(b, 0, LINK_FRAME_DATA, 0, 0x80000001u);
  assert_int_equal(link_frame_decode(b, 12, 1 << 16, &f), -EPROTO);
  /* zero and oversized window increments */
  link_frame_put_window(b, 0, 1);
  link_put_u32(b + 12, 0);
  assert_int_equal(link_frame_decode(b, 16, 1 << 16, &f), 16);
  uint32_t v;
  assert_int_equal(link_frame_window(&f, &v), -EPROTO);
  link_put_u32(b + 12, 0x80000000u);
  assert_int_equal(link_frame_window(&f, &v), -EPROTO);
  /* unknown types decode, to be skipped */
  link_frame_header_put(b, 2, 200, 0, 0);
  assert_int_equal(link_frame_decode(b, 14, 1 << 16, &f), 14);
}

static void preface(void **state) {
  assert_int_equal(link_preface_check((const uint8_t *)LINK_PREFACE, 8), 1);
  assert_int_equal(link_preface_check((const uint8_t *)LINK_PREFACE, 3), 0);
  assert_int_equal(link_preface_check((const uint8_t *)"GET / HTTP/1.1", 14), -EPROTO);
  assert_int_equal(link_preface_check((const uint8_t *)"\x16\x03\x01\x02\x00", 5), -EPROTO);
  uint8_t v2[8];
  memcpy(v2, LINK_PREFACE, 8);
  v2[7] = 2;
  assert_int_equal(link_preface_check(v2, 8), -EPROTONOSUPPORT);
}

static void messages(void **state) {
  uint8_t b[32];
  const uint8_t *m;
  uint32_t n;
  link_put_u32(b, 3);
  memcpy(b + 4, "abc", 3);
  assert_int_equal(link_msg_next(b, 7, 100, &m, &n), 7);
  assert_int_equal(n, 3);
  assert_memory_equal(m, "abc", 3);
  assert_int_equal(link_msg_next(b, 6, 100, &m, &n), 0);
  assert_int_equal(link_msg_next(b, 2, 100, &m, &n), 0);
  link_put_u32(b, 101);
  assert_int_equal(link_msg_next(b, 4, 100, &m, &n), -EMSGSIZE);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(roundtrip),
      cmocka_unit_test(rules),
      cmocka_unit_test(preface),
      cmocka_unit_test(messages),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
