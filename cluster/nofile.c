#include "nofile.h"

#include <errno.h>
#include <string.h>
#include <sys/resource.h>

#include "tern_limits.h"

uint64_t nofile_raise(uint64_t want, FILE *log)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
		fprintf(log, "tern: cannot read the open files limit: %s\n", strerror(errno));
		return 0;
	}
	rlim_t was = rl.rlim_cur, to = rl.rlim_max;
	if (to == RLIM_INFINITY || to > TERN_NOFILE_MAX)
		to = TERN_NOFILE_MAX;
	if (to > rl.rlim_cur) {
		rl.rlim_cur = to;
		if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
			fprintf(log, "tern: cannot raise the open files limit to %llu: %s\n",
				(unsigned long long)to, strerror(errno));
		getrlimit(RLIMIT_NOFILE, &rl);
	}
	uint64_t now = rl.rlim_cur == RLIM_INFINITY ? TERN_NOFILE_MAX : (uint64_t)rl.rlim_cur;
	uint64_t hard = rl.rlim_max == RLIM_INFINITY ? TERN_NOFILE_MAX : (uint64_t)rl.rlim_max;
	if (now >= want) {
		fprintf(log, "tern: open files limit %llu (was %llu)\n", (unsigned long long)now,
			(unsigned long long)was);
	} else {
		uint64_t fit = now > TERN_NOFILE_RESERVE ? now - TERN_NOFILE_RESERVE : 0;
		fprintf(log,
			"tern: open files limit %llu (hard limit %llu): about %llu clients fit, "
			"under the %llu wanted; raise LimitNOFILE (systemd) or ulimit -Hn\n",
			(unsigned long long)now, (unsigned long long)hard,
			(unsigned long long)fit, (unsigned long long)(want - TERN_NOFILE_RESERVE));
	}
	return now;
}
