/* libFuzzer target for the port multiplexer's request head parser (tests/fuzz/portmux.cmake).
 * Every input is parsed whole and without its last byte; the parser must not read outside the
 * input, a verdict must hold its invariants (method a non-empty uppercase token, path starting
 * with '/', without '?' or control bytes, both inside the input), and a head refused with n-1
 * bytes must stay refused with n. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "portmux.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(const char *buf, size_t len, int r, const char *m, size_t ml, const char *p,
		  size_t pl)
{
	if (r < -1 || r > 1)
		abort();
	if (r != 1)
		return;
	if (m != buf || ml == 0 || ml >= len || p < buf || pl == 0 || p + pl > buf + len)
		abort();
	for (size_t i = 0; i < ml; i++)
		if (m[i] < 'A' || m[i] > 'Z')
			abort();
	if (p[0] != '/')
		abort();
	for (size_t i = 0; i < pl; i++)
		if (p[i] == '?' || (unsigned char)p[i] <= 0x20 || (unsigned char)p[i] >= 0x7f)
			abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *m, *p;
	size_t ml, pl;
	const char *buf = (const char *)data;
	int whole = portmux_parse_head(buf, size, &m, &ml, &p, &pl);
	check(buf, size, whole, m, ml, p, pl);
	if (size == 0)
		return 0;
	int shorter = portmux_parse_head(buf, size - 1, &m, &ml, &p, &pl);
	check(buf, size - 1, shorter, m, ml, p, pl);
	if (shorter == -1 && whole != -1)
		abort();
	if (shorter == 1 && whole != 1)
		abort();
	return 0;
}
