/* Tern error codes. A Tern error is a negative int whose absolute value is the
 * contract's code (HTTP status x 100 + detail), so the number that crosses the
 * module boundary is the number the client sees. 0 is success. */
#ifndef TERN_ERR_H
#define TERN_ERR_H

#include <stdbool.h>

enum {
	TERN_OK = 0,
	TERN_EBADREQ = -40000,	   /* bad JSON, missing field, wrong type, unknown op */
	TERN_EBADNAME = -40001,	   /* bad channel or queue name */
	TERN_EUNAUTH = -40100,
	TERN_EFORBIDDEN = -40300,
	TERN_ENOTFOUND = -40400,
	TERN_ETOOLARGE = -41300,   /* message or body over the limit */
	TERN_ERATELIMIT = -42900,  /* retryable */
	TERN_ESLOW = -42901,	   /* slow consumer: outbound queue over its bound */
	TERN_EINTERNAL = -50000,
	TERN_EUNAVAIL = -50300,	   /* retryable: store queue full, shutting down */
};

/* The HTTP status of a Tern error (its code / 100), 500 for anything unknown. */
int tern_err_status(int err);
/* The contract code (positive), 50000 for values that are not Tern errors. */
int tern_err_code(int err);
/* Whether a client should retry: 429xx and 503xx. */
bool tern_err_retryable(int err);
/* A generic English message for the code, for when no better one is at hand. */
const char *tern_err_str(int err);

#endif
