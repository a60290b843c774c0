/* Error codes (contract "Errors") and the shared message buffer. */
#include "harness.h"

#include <string.h>

#define N(a) (sizeof(a) / sizeof((a)[0]))

static void err_mapping(void **state)
{
	(void)state;
	static const struct {
		int err, code, status;
		bool retryable;
	} cases[] = {
		{TERN_EBADREQ, 40000, 400, false},    {TERN_EBADNAME, 40001, 400, false},
		{TERN_EUNAUTH, 40100, 401, false},    {TERN_EFORBIDDEN, 40300, 403, false},
		{TERN_ENOTFOUND, 40400, 404, false},  {TERN_ETOOLARGE, 41300, 413, false},
		{TERN_ERATELIMIT, 42900, 429, true},  {TERN_ESLOW, 42901, 429, true},
		{TERN_EINTERNAL, 50000, 500, false},  {TERN_EUNAVAIL, 50300, 503, true},
	};
	for (size_t i = 0; i < N(cases); i++) {
		int e = cases[i].err;
		if (tern_err_code(e) != cases[i].code || tern_err_status(e) != cases[i].status ||
		    tern_err_retryable(e) != cases[i].retryable)
			fail_msg("err %d: code %d status %d retryable %d", e, tern_err_code(e),
				 tern_err_status(e), tern_err_retryable(e));
		const char *s = tern_err_str(e);
		assert_non_null(s);
		assert_true(strlen(s) > 0);
	}
	/* Distinct errors have distinct messages, except where none is known. */
	assert_string_not_equal(tern_err_str(TERN_EBADREQ), tern_err_str(TERN_EBADNAME));
	assert_string_not_equal(tern_err_str(TERN_EUNAVAIL), tern_err_str(TERN_EINTERNAL));
	assert_string_not_equal(tern_err_str(TERN_ERATELIMIT), tern_err_str(TERN_ESLOW));
}

static void err_unknown_values(void **state)
{
	(void)state;
	/* Anything that is not a Tern error reads as 50000 internal, not retryable. */
	static const int odd[] = {-1, -22, -39999, -60000, -99999, 40001, 1, -2147483647};
	for (size_t i = 0; i < N(odd); i++) {
		assert_int_equal(tern_err_code(odd[i]), 50000);
		assert_int_equal(tern_err_status(odd[i]), 500);
		assert_false(tern_err_retryable(odd[i]));
		assert_string_equal(tern_err_str(odd[i]), tern_err_str(TERN_EINTERNAL));
	}
	/* A detail code the enum does not name still maps by its number. */
	assert_int_equal(tern_err_code(-42950), 42950);
	assert_int_equal(tern_err_status(-42950), 429);
	assert_true(tern_err_retryable(-42950));
	assert_int_equal(tern_err_status(-50399), 503);
	assert_true(tern_err_retryable(-50399));
	assert_false(tern_err_retryable(-50400));
}

static void msg_copies_and_refcounts(void **state)
{
	(void)state;
	char chan[] = "chat:lobby", name[] = "greet", data[] = "{\"a\":1}";
	struct tern_msg *m = msg_new(chan, strlen(chan), name, strlen(name), data, strlen(data),
				     TERN_ENC_JSON);
	assert_non_null(m);
	/* The message owns copies: the caller's buffers may change. */
	memset(chan, 'X', strlen(chan));
	memset(name, 'X', strlen(name));
	memset(data, 'X', strlen(data));
	assert_int_equal(m->refs, 1);
	assert_int_equal(m->seq, 0);
	assert_int_equal(m->chan_len, 10);
	assert_memory_equal(m->chan, "chat:lobby", 10);
	assert_int_equal(m->chan[10], 0);
	assert_true(m->has_name);
	assert_int_equal(m->name_len, 5);
	assert_string_equal(m->name, "greet");
	assert_int_equal(m->data_len, 7);
	assert_memory_equal(m->data, "{\"a\":1}", 7);
	assert_int_equal(m->data[7], 0);
	assert_int_equal(m->enc, TERN_ENC_JSON);
	assert_ptr_equal(msg_ref(m), m);
	assert_int_equal(m->refs, 2);
	msg_unref(m);
	assert_int_equal(m->refs, 1);
	msg_unref(m); /* freed: leak detection checks the count reached 0 */
	msg_unref(NULL);

	/* Binary data with NUL bytes, no event name, base64 encoding. */
	static const unsigned char bin[] = {0, 1, 0, 255, 0};
	m = msg_new("c", 1, NULL, 0, bin, sizeof(bin), TERN_ENC_BASE64);
	assert_non_null(m);
	assert_false(m->has_name);
	assert_int_equal(m->name_len, 0);
	assert_int_equal(m->data_len, sizeof(bin));
	assert_memory_equal(m->data, bin, sizeof(bin));
	assert_int_equal(m->enc, TERN_ENC_BASE64);
	msg_unref(m);

	/* Empty data and an empty (but present) name. */
	m = msg_new("c", 1, "", 0, NULL, 0, TERN_ENC_JSON);
	assert_non_null(m);
	assert_true(m->has_name);
	assert_int_equal(m->data_len, 0);
	assert_non_null(m->data);
	msg_unref(m);
}

int main(int argc, char **argv)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(err_mapping),
		cmocka_unit_test(err_unknown_values),
		cmocka_unit_test(msg_copies_and_refcounts),
	};
	return h_run("err", tests, N(tests), argc, argv);
}
