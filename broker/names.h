/* Channel and queue names (contract "Names and sizes"). */
#ifndef TERN_NAMES_H
#define TERN_NAMES_H

#include <stddef.h>

/* Checks a channel name: 1-255 bytes of valid UTF-8 with no Unicode
 * White_Space, Cc or Cf code point, not starting with '$' (reserved).
 * Returns 0, or TERN_EBADNAME with *why set to a static English reason. */
int names_check_channel(const char *name, size_t len, const char **why);

/* As names_check_channel, with the queue limit of 250 bytes (254 for the
 * dead-letter queue "{q}.dlq" of a 250-byte queue). */
int names_check_queue(const char *name, size_t len, const char **why);

/* Decodes one UTF-8 code point from s[0..len). Returns its byte length (1-4)
 * and stores it in *cp, or returns 0 for an invalid, overlong, surrogate or
 * truncated sequence. */
size_t names_utf8_decode(const unsigned char *s, size_t len, unsigned *cp);

#endif
