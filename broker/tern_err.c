#include "tern_err.h"

int tern_err_code(int err)
{
	int code = -err;
	if (code < 40000 || code > 59999)
		return 50000;
	return code;
}

int tern_err_status(int err) { return tern_err_code(err) / 100; }

bool tern_err_retryable(int err)
{
	int status = tern_err_status(err);
	return status == 429 || status == 503;
}

const char *tern_err_str(int err)
{
	switch (err) {
	case TERN_EBADREQ: return "bad request";
	case TERN_EBADNAME: return "bad channel or queue name";
	case TERN_EUNAUTH: return "unauthorized";
	case TERN_EFORBIDDEN: return "forbidden";
	case TERN_ENOTFOUND: return "not found";
	case TERN_ETOOLARGE: return "message too large";
	case TERN_ERATELIMIT: return "rate limited";
	case TERN_ESLOW: return "slow consumer: outbound queue over its limit";
	case TERN_EUNAVAIL: return "unavailable, retry later";
	default: return "internal error";
	}
}
