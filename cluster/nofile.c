#include "nofile.h"

#include <errno.h>
#include <string.h>
#include <sys/resource.h>

#include "tern_limits.h"

static uint64_t lim(rlim_t v)
{
	return v == RLIM_INFINITY || v > TERN_NOFILE_MAX ? TERN_NOFILE_MAX : (uint64_t)v;
}

void nofile_raise(struct nofile *out)
{
	struct rlimit rl;
	memset(out, 0, sizeof(*out));
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
		out->err = errno;
		return;
	}
	out->was = out->now = lim(rl.rlim_cur);
	out->hard = lim(rl.rlim_max);
	if (out->hard <= out->was)
		return;
	rl.rlim_cur = (rlim_t)out->hard;
	if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
		out->err = errno;
	else
		out->now = out->hard;
}

void nofile_log(const struct nofile *n, uint64_t want, unsigned procs, FILE *log)
{
	if (n->now == 0) {
		fprintf(log, "tern: cannot read the open files limit: %s\n", strerror(n->err));
		return;
	}
	if (n->now >= want) {
		fprintf(log, "tern: open files limit %llu (was %llu)%s\n", (unsigned long long)n->now,
			(unsigned long long)n->was, procs > 1 ? " in each worker" : "");
		return;
	}
	uint64_t fit = n->now > TERN_NOFILE_RESERVE ? n->now - TERN_NOFILE_RESERVE : 0;
	fprintf(log,
		"tern: open files limit %llu%s (hard limit %llu%s%s): about %llu clients fit, under "
		"the %llu wanted; raise LimitNOFILE (systemd) or ulimit -Hn%s\n",
		(unsigned long long)n->now, procs > 1 ? " in each worker" : "",
		(unsigned long long)n->hard, n->err ? ", raising failed: " : "",
		n->err ? strerror(n->err) : "", (unsigned long long)fit * procs,
		(unsigned long long)(want > TERN_NOFILE_RESERVE ? want - TERN_NOFILE_RESERVE : want) *
			procs,
		procs > 1 ? ", or run more workers" : ", or spread clients over tern edge --workers");
}
