/* ASSERT for the unit tests that run outside cmocka's checks (inside loop callbacks, fixtures):
 * never compiled out (libuv's task.h), aborts with the failing expression. */
#ifndef TERN_TEST_ASSERT_H
#define TERN_TEST_ASSERT_H

#include <stdio.h>
#include <stdlib.h>

#define ASSERT(x)                                                                          \
	do {                                                                               \
		if (!(x)) {                                                                \
			fprintf(stderr, "%s:%d: ASSERT(%s) failed\n", __FILE__, __LINE__, #x); \
			abort();                                                           \
		}                                                                          \
	} while (0)

#endif
