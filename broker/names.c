#include "names.h"

#include <stdbool.h>
#include <string.h>

#include "tern_err.h"
#include "tern_limits.h"

size_t names_utf8_decode(const unsigned char *s, size_t len, unsigned *cp)
{
	unsigned c = s[0], min;
	size_t n;

	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	if (c >= 0xC2 && c <= 0xDF) {
		n = 2, c &= 0x1F, min = 0x80;
	} else if (c >= 0xE0 && c <= 0xEF) {
		n = 3, c &= 0x0F, min = 0x800;
	} else if (c >= 0xF0 && c <= 0xF4) {
		n = 4, c &= 0x07, min = 0x10000;
	} else {
		return 0;
	}
	if (len < n)
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xC0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3F);
	}
	if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF))
		return 0;
	*cp = c;
	return n;
}

/* Unicode 15 White_Space, plus categories Cc and Cf (PropList.txt and
 * UnicodeData.txt). Kept as ranges: names are short, a linear scan is cheap. */
static const unsigned forbidden[][2] = {
	{0x0000, 0x0020}, /* Cc C0 controls, and SPACE (White_Space) */
	{0x007F, 0x00A0}, /* DEL, C1 controls (Cc), NEL, NBSP (White_Space) */
	{0x00AD, 0x00AD}, {0x0600, 0x0605}, {0x061C, 0x061C}, {0x06DD, 0x06DD},
	{0x070F, 0x070F}, {0x0890, 0x0891}, {0x08E2, 0x08E2}, {0x1680, 0x1680},
	{0x180E, 0x180E}, {0x2000, 0x200F}, {0x2028, 0x202F}, {0x205F, 0x2064},
	{0x2066, 0x206F}, {0x3000, 0x3000}, {0xFEFF, 0xFEFF}, {0xFFF9, 0xFFFB},
	{0x110BD, 0x110BD}, {0x110CD, 0x110CD}, {0x13430, 0x1343F},
	{0x1BCA0, 0x1BCA3}, {0x1D173, 0x1D17A}, {0xE0001, 0xE0001},
	{0xE0020, 0xE007F},
};

static bool is_forbidden(unsigned cp)
{
	for (size_t i = 0; i < sizeof(forbidden) / sizeof(forbidden[0]); i++)
		if (cp >= forbidden[i][0] && cp <= forbidden[i][1])
			return true;
	return false;
}

static int check(const char *name, size_t len, size_t max, const char **why)
{
	const unsigned char *s = (const unsigned char *)name;
	const char *dummy;

	if (!why)
		why = &dummy;
	if (len == 0) {
		*why = "name is empty";
		return TERN_EBADNAME;
	}
	if (len > max) {
		*why = max == TERN_NAME_MAX_BYTES ? "name is longer than 255 bytes"
						   : "queue name is longer than 250 bytes";
		return TERN_EBADNAME;
	}
	if (s[0] == '$') {
		*why = "names starting with '$' are reserved";
		return TERN_EBADNAME;
	}
	for (size_t i = 0; i < len;) {
		unsigned cp;
		size_t n = names_utf8_decode(s + i, len - i, &cp);
		if (n == 0) {
			*why = "name is not valid UTF-8";
			return TERN_EBADNAME;
		}
		if (is_forbidden(cp)) {
			*why = "name contains whitespace or a control character";
			return TERN_EBADNAME;
		}
		i += n;
	}
	return 0;
}

int names_check_channel(const char *name, size_t len, const char **why)
{
	return check(name, len, TERN_NAME_MAX_BYTES, why);
}

int names_check_queue(const char *name, size_t len, const char **why)
{
	/* Queues stop at 250 bytes so that "{q}.dlq" always fits: a dead-letter
	 * queue of such a queue is a valid name up to 254 bytes. */
	if (len > TERN_QUEUE_NAME_MAX_BYTES && len <= TERN_QUEUE_NAME_MAX_BYTES + 4 &&
	    memcmp(name + len - 4, ".dlq", 4) == 0)
		return check(name, len, TERN_NAME_MAX_BYTES, why);
	return check(name, len, TERN_QUEUE_NAME_MAX_BYTES, why);
}
