/* Channel and queue names (contract "Names and sizes"): 1-255 bytes (queues
 * 250) of valid UTF-8 with no Unicode White_Space, Cc or Cf, not starting
 * with '$'. */
#include "harness.h"

#include <stdio.h>
#include <string.h>

#include "names.h"

struct name_case {
	const char *what;
	const char *s;
	size_t len; /* 0: strlen(s) */
};

#define NC(what, s) {what, s, 0}
#define NCL(what, s) {what, s, sizeof(s) - 1} /* with embedded NUL bytes */

static void describe(const struct name_case *c, size_t len, char *out, size_t cap)
{
	size_t o = (size_t)snprintf(out, cap, "%s [", c->what);
	for (size_t i = 0; i < len && i < 24 && o + 4 < cap; i++)
		o += (size_t)snprintf(out + o, cap - o, "%02x", (unsigned char)c->s[i]);
	snprintf(out + o, cap - o, "%s]", len > 24 ? "..." : "");
}

static size_t case_len(const struct name_case *c) { return c->len ? c->len : strlen(c->s); }

static void expect_valid(const struct name_case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const char *why = "untouched";
		size_t len = case_len(&cases[i]);
		int rc = names_check_channel(cases[i].s, len, &why);
		int rq = names_check_queue(cases[i].s, len, &why);
		if (rc != 0 || rq != 0) {
			char d[128];
			describe(&cases[i], len, d, sizeof(d));
			fail_msg("should be valid: %s: channel %d queue %d (%s)", d, rc, rq, why);
		}
	}
}

static void expect_invalid(const struct name_case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const char *why = NULL;
		size_t len = case_len(&cases[i]);
		int rc = names_check_channel(cases[i].s, len, &why);
		char d[128];
		describe(&cases[i], len, d, sizeof(d));
		if (rc != TERN_EBADNAME)
			fail_msg("channel should be invalid: %s: got %d", d, rc);
		if (!why || !*why)
			fail_msg("no reason for %s", d);
		why = NULL;
		if (names_check_queue(cases[i].s, len, &why) != TERN_EBADNAME || !why)
			fail_msg("queue should be invalid: %s", d);
		/* why is optional */
		assert_int_equal(names_check_channel(cases[i].s, len, NULL), TERN_EBADNAME);
	}
}

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void names_valid(void **state)
{
	(void)state;
	static const struct name_case ok[] = {
		NC("one byte", "a"),
		NC("namespace", "chat:lobby"),
		NC("nested namespaces", "org:team:room-1"),
		NC("punctuation", "a.b/c_d-e#f*g+h=i@j!k?l"),
		NC("dollar not first", "a$b"),
		NC("e acute", "\xc3\xa9"),
		NC("e acute in a name", "caf\xc3\xa9:menu"),
		NC("emoji", "\xf0\x9f\x98\x80"),
		NC("emoji namespace", "chat:\xf0\x9f\x8e\x89party"),
		NC("CJK", "\xe8\x81\x8a\xe5\xa4\xa9"),
		NC("inverted exclamation U+00A1 (after NBSP)", "\xc2\xa1"),
		NC("U+00AC (before soft hyphen)", "\xc2\xac"),
		NC("U+00AE (after soft hyphen)", "\xc2\xae"),
		NC("hyphen U+2010 (after ZWSP..RLM)", "\xe2\x80\x90"),
		NC("U+2027 (before LINE SEPARATOR)", "\xe2\x80\xa7"),
		NC("U+D7FF (below surrogates)", "\xed\x9f\xbf"),
		NC("U+E000 private use (above surrogates)", "\xee\x80\x80"),
		NC("U+FEFE (before BOM)", "\xef\xbb\xbe"),
		NC("U+10000", "\xf0\x90\x80\x80"),
		NC("U+10FFFF", "\xf4\x8f\xbf\xbf"),
	};
	expect_valid(ok, N(ok));
}

static void names_length_bounds(void **state)
{
	(void)state;
	char buf[300];
	const char *why = NULL;

	memset(buf, 'a', sizeof(buf));
	assert_int_equal(names_check_channel(buf, 1, NULL), 0);
	assert_int_equal(names_check_channel(buf, TERN_NAME_MAX_BYTES, NULL), 0);
	assert_int_equal(names_check_channel(buf, 255, NULL), 0);
	assert_int_equal(names_check_channel(buf, 256, &why), TERN_EBADNAME);
	assert_non_null(strstr(why, "255"));
	assert_int_equal(names_check_channel(buf, 299, NULL), TERN_EBADNAME);

	why = NULL;
	assert_int_equal(names_check_queue(buf, 250, NULL), 0);
	assert_int_equal(names_check_queue(buf, 251, &why), TERN_EBADNAME);
	assert_non_null(strstr(why, "250"));
	/* 251 is a fine channel name: the queue limit is its own. */
	assert_int_equal(names_check_channel(buf, 251, NULL), 0);

	why = NULL;
	assert_int_equal(names_check_channel(buf, 0, &why), TERN_EBADNAME);
	assert_non_null(strstr(why, "empty"));
	assert_int_equal(names_check_queue(buf, 0, NULL), TERN_EBADNAME);
	assert_int_equal(names_check_channel("", 0, NULL), TERN_EBADNAME);

	/* The limit is in bytes, not code points: 85 euro signs are 255 bytes,
	 * 86 are 258. */
	char euro[3 * 86];
	for (int i = 0; i < 86; i++)
		memcpy(euro + 3 * i, "\xe2\x82\xac", 3);
	assert_int_equal(names_check_channel(euro, 255, NULL), 0);
	assert_int_equal(names_check_channel(euro, 258, NULL), TERN_EBADNAME);
	/* 254 ASCII bytes then a 2-byte letter: 256 bytes. */
	memset(buf, 'a', 254);
	memcpy(buf + 254, "\xc3\xa9", 2);
	assert_int_equal(names_check_channel(buf, 256, NULL), TERN_EBADNAME);
	assert_int_equal(names_check_channel(buf + 1, 255, NULL), 0);
}

static void names_reserved_and_whitespace(void **state)
{
	(void)state;
	static const struct name_case bad[] = {
		NC("leading $", "$sys"),
		NC("just $", "$"),
		NC("$ then namespace", "$chat:lobby"),
		NC("space", "chat lobby"),
		NC("leading space", " chat"),
		NC("trailing space", "chat "),
		NC("tab", "chat\tlobby"),
		NC("newline", "chat\n"),
		NC("carriage return", "chat\rx"),
		NC("vertical tab", "a\vb"),
		NC("form feed", "a\fb"),
		NC("NBSP U+00A0", "chat\xc2\xa0lobby"),
		NC("NEL U+0085", "a\xc2\x85"),
		NC("OGHAM SPACE U+1680", "a\xe1\x9a\x80"),
		NC("EN QUAD U+2000", "a\xe2\x80\x80"),
		NC("HAIR SPACE U+200A", "a\xe2\x80\x8a"),
		NC("LINE SEPARATOR U+2028", "a\xe2\x80\xa8"),
		NC("PARAGRAPH SEPARATOR U+2029", "a\xe2\x80\xa9"),
		NC("NNBSP U+202F", "a\xe2\x80\xaf"),
		NC("MMSP U+205F", "a\xe2\x81\x9f"),
		NC("IDEOGRAPHIC SPACE U+3000", "a\xe3\x80\x80"),
		NC("ZERO WIDTH SPACE U+200B", "chat\xe2\x80\x8blobby"),
		NC("ZWNJ U+200C", "a\xe2\x80\x8c"),
		NC("ZWJ U+200D", "a\xe2\x80\x8d"),
		NC("RLM U+200F", "a\xe2\x80\x8f"),
		NC("RLO U+202E", "a\xe2\x80\xae"),
		NC("WORD JOINER U+2060", "a\xe2\x81\xa0"),
		NC("BOM U+FEFF", "\xef\xbb\xbf" "chat"),
		NC("BOM inside", "ch\xef\xbb\xbf" "at"),
		NC("SOFT HYPHEN U+00AD", "a\xc2\xad"),
		NC("ARABIC NUMBER SIGN U+0600", "a\xd8\x80"),
		NC("MONGOLIAN VS U+180E", "a\xe1\xa0\x8e"),
		NC("INTERLINEAR ANCHOR U+FFF9", "a\xef\xbf\xb9"),
		NC("LANGUAGE TAG U+E0001", "a\xf3\xa0\x80\x81"),
		NC("TAG LATIN a U+E0061", "a\xf3\xa0\x81\xa1"),
		NC("CANCEL TAG U+E007F", "a\xf3\xa0\x81\xbf"),
	};
	expect_invalid(bad, N(bad));
	const char *why = NULL;
	assert_int_equal(names_check_channel("$x", 2, &why), TERN_EBADNAME);
	assert_non_null(strchr(why, '$'));
}

static void names_controls(void **state)
{
	(void)state;
	/* Every C0 control, DEL and every C1 control (U+0080-U+009F, encoded as
	 * two bytes), at the start, middle and end. */
	for (unsigned c = 0; c <= 0x9f; c++) {
		if (c >= 0x20 && c < 0x7f)
			continue;
		char enc[2];
		size_t el;
		if (c < 0x80) {
			enc[0] = (char)c;
			el = 1;
		} else {
			enc[0] = (char)(0xc0 | (c >> 6));
			enc[1] = (char)(0x80 | (c & 0x3f));
			el = 2;
		}
		char buf[8];
		size_t positions[3][2] = {{0, el + 2}, {1, el + 2}, {2, el + 2}};
		for (int p = 0; p < 3; p++) {
			memset(buf, 'x', sizeof(buf));
			memcpy(buf + positions[p][0], enc, el);
			if (names_check_channel(buf, positions[p][1], NULL) != TERN_EBADNAME)
				fail_msg("control U+%04X at %zu accepted", c, positions[p][0]);
		}
	}
	static const struct name_case bad[] = {
		NCL("NUL inside", "a\0b"),
		NCL("only NUL", "\0"),
		NC("DEL", "a\x7f"),
		NC("ESC", "\x1b[0m"),
	};
	expect_invalid(bad, N(bad));
}

static void names_bad_utf8(void **state)
{
	(void)state;
	static const struct name_case bad[] = {
		NC("lone continuation 0x80", "a\x80"),
		NC("lone continuation 0xBF", "\xbf"),
		NC("overlong '/' C0 AF", "\xc0\xaf"),
		NC("overlong C1 BF", "a\xc1\xbf"),
		NC("overlong 3-byte '/'", "\xe0\x80\xaf"),
		NC("overlong 3-byte U+07FF", "\xe0\x9f\xbf"),
		NC("overlong 4-byte '/'", "\xf0\x80\x80\xaf"),
		NC("overlong 4-byte U+FFFF", "\xf0\x8f\xbf\xbf"),
		NC("above U+10FFFF", "\xf4\x90\x80\x80"),
		NC("lead F5", "\xf5\x80\x80\x80"),
		NC("lead F8 (5-byte form)", "\xf8\x88\x80\x80\x80"),
		NC("lead FC (6-byte form)", "\xfc\x84\x80\x80\x80\x80"),
		NC("byte FE", "a\xfe"),
		NC("byte FF", "\xff"),
		NC("surrogate U+D800", "a\xed\xa0\x80"),
		NC("surrogate U+DBFF", "\xed\xaf\xbf"),
		NC("surrogate U+DC00", "\xed\xb0\x80"),
		NC("surrogate U+DFFF", "\xed\xbf\xbf"),
		NC("CESU-8 pair for U+1F600", "\xed\xa0\xbd\xed\xb8\x80"),
		NC("truncated 2-byte at end", "a\xc3"),
		NC("truncated 3-byte at end", "a\xe2\x82"),
		NC("truncated 4-byte at end", "\xf0\x9f\x98"),
		NC("lead alone", "\xe2"),
		NC("truncated 3-byte then ASCII", "\xe2\x82" "a"),
		NC("truncated 4-byte then ASCII", "\xf0\x9f" "ab"),
		NC("2-byte with ASCII second", "\xc3\x28"),
		NC("3-byte with bad third", "\xe2\x82\x28"),
		NC("4-byte with bad last", "\xf0\x9f\x98\xc0"),
		NC("Latin-1 e acute", "caf\xe9"),
	};
	expect_invalid(bad, N(bad));
	const char *why = NULL;
	assert_int_equal(names_check_channel("\xff", 1, &why), TERN_EBADNAME);
	assert_non_null(strstr(why, "UTF-8"));

	/* A valid multi-byte sequence cut by len: the bytes past len are not
	 * read. */
	assert_int_equal(names_check_channel("a\xc3\xa9", 2, NULL), TERN_EBADNAME);
	assert_int_equal(names_check_channel("a\xc3\xa9", 3, NULL), 0);
	assert_int_equal(names_check_channel("\xf0\x9f\x98\x80", 3, NULL), TERN_EBADNAME);
}

static void names_decode(void **state)
{
	(void)state;
	static const struct {
		const char *s;
		size_t len;
		unsigned cp;
	} ok[] = {
		{"A", 1, 'A'},
		{"\x7f", 1, 0x7f},
		{"\xc2\x80", 2, 0x80},
		{"\xc3\xa9", 2, 0xe9},
		{"\xdf\xbf", 2, 0x7ff},
		{"\xe0\xa0\x80", 3, 0x800},
		{"\xe2\x82\xac", 3, 0x20ac},
		{"\xed\x9f\xbf", 3, 0xd7ff},
		{"\xee\x80\x80", 3, 0xe000},
		{"\xef\xbf\xbf", 3, 0xffff},
		{"\xf0\x90\x80\x80", 4, 0x10000},
		{"\xf0\x9f\x98\x80", 4, 0x1f600},
		{"\xf4\x8f\xbf\xbf", 4, 0x10ffff},
	};
	for (size_t i = 0; i < N(ok); i++) {
		unsigned cp = 0xdeadbeef;
		size_t n = names_utf8_decode((const unsigned char *)ok[i].s, ok[i].len, &cp);
		if (n != ok[i].len || cp != ok[i].cp)
			fail_msg("decode case %zu: n=%zu cp=U+%04X, want n=%zu U+%04X", i, n, cp,
				 ok[i].len, ok[i].cp);
		/* Trailing bytes are not consumed. */
		char buf[8];
		memcpy(buf, ok[i].s, ok[i].len);
		buf[ok[i].len] = 'z';
		assert_int_equal(names_utf8_decode((const unsigned char *)buf, ok[i].len + 1, &cp),
				 ok[i].len);
		/* One byte short is truncated. */
		if (ok[i].len > 1)
			assert_int_equal(
				names_utf8_decode((const unsigned char *)ok[i].s, ok[i].len - 1, &cp), 0);
	}
	static const char *const bad[] = {
		"\x80", "\xc0\x80", "\xc1\xbf", "\xe0\x80\x80", "\xed\xa0\x80", "\xed\xbf\xbf",
		"\xf0\x80\x80\x80", "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xff", "\xc3\x41",
	};
	for (size_t i = 0; i < N(bad); i++) {
		unsigned cp = 0;
		if (names_utf8_decode((const unsigned char *)bad[i], strlen(bad[i]), &cp) != 0)
			fail_msg("decode bad case %zu accepted as U+%04X", i, cp);
	}
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(names_valid),
		cmocka_unit_test(names_length_bounds),
		cmocka_unit_test(names_reserved_and_whitespace),
		cmocka_unit_test(names_controls),
		cmocka_unit_test(names_bad_utf8),
		cmocka_unit_test(names_decode),
	};
	return h_run("names", tests, N(tests), argc, argv);
}
