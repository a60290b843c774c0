/*
 * Measuring tools of the fan-out benchmark: payload stamps, the latency
 * histogram and /proc readings. See fanout.h for each contract.
 */
#include "fanout.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

uint64_t fanout_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- payload ------------------------------------------------------------ */

static const char hex_digits[] = "0123456789abcdef";

static void put_hex16(char *out, uint64_t v)
{
	for (int i = 15; i >= 0; i--) {
		out[i] = hex_digits[v & 0xf];
		v >>= 4;
	}
}

static int get_hex16(const char *in, uint64_t *v)
{
	uint64_t r = 0;

	for (int i = 0; i < 16; i++) {
		char c = in[i];
		unsigned d;

		if (c >= '0' && c <= '9')
			d = (unsigned)(c - '0');
		else if (c >= 'a' && c <= 'f')
			d = (unsigned)(c - 'a' + 10);
		else
			return -1;
		r = r << 4 | d;
	}
	*v = r;
	return 0;
}

void fanout_payload_make(char *buf, size_t len, uint64_t index, uint64_t sent_ns)
{
	put_hex16(buf, index);
	put_hex16(buf + 16, sent_ns);
	memset(buf + FANOUT_PAYLOAD_MIN, '.', len - FANOUT_PAYLOAD_MIN);
}

int fanout_payload_read(const char *buf, size_t len, uint64_t *index, uint64_t *sent_ns)
{
	if (len < FANOUT_PAYLOAD_MIN)
		return -1;
	if (get_hex16(buf, index) < 0 || get_hex16(buf + 16, sent_ns) < 0)
		return -1;
	return 0;
}

/* ---- histogram ---------------------------------------------------------- */

void fanout_hist_init(struct fanout_hist *h)
{
	memset(h, 0, sizeof(*h));
	h->min_ns = UINT64_MAX;
}

static unsigned bucket_of(uint64_t v)
{
	unsigned msb, shift, idx;

	if (v < 128)
		return (unsigned)v;
	msb = 63u - (unsigned)__builtin_clzll(v);
	shift = msb - FANOUT_HIST_SUB_BITS;
	idx = 128 + (shift - 1) * 64 + (unsigned)((v >> shift) - 64);
	return idx < FANOUT_HIST_BUCKETS ? idx : FANOUT_HIST_BUCKETS - 1;
}

/* Largest value that falls into bucket `idx`. */
static uint64_t bucket_top(unsigned idx)
{
	unsigned shift, sub;

	if (idx < 128)
		return idx;
	shift = (idx - 128) / 64 + 1;
	sub = (idx - 128) % 64;
	return (((uint64_t)sub + 65) << shift) - 1;
}

void fanout_hist_record(struct fanout_hist *h, uint64_t value_ns)
{
	h->buckets[bucket_of(value_ns)]++;
	h->count++;
	if (value_ns > h->max_ns)
		h->max_ns = value_ns;
	if (value_ns < h->min_ns)
		h->min_ns = value_ns;
}

uint64_t fanout_hist_quantile(const struct fanout_hist *h, double q)
{
	uint64_t want, seen = 0;

	if (h->count == 0)
		return 0;
	want = (uint64_t)(q * (double)h->count + 0.5);
	if (want < 1)
		want = 1;
	if (want > h->count)
		want = h->count;
	for (unsigned i = 0; i < FANOUT_HIST_BUCKETS; i++) {
		seen += h->buckets[i];
		if (seen >= want) {
			uint64_t top = bucket_top(i);
			return top < h->max_ns ? top : h->max_ns;
		}
	}
	return h->max_ns;
}

/* ---- /proc -------------------------------------------------------------- */

/* Sums the first two fields of every thread's schedstat (see
 * Documentation/scheduler/sched-stats.rst); leaves zeros when unavailable. */
static void sum_schedstat(int pid, struct fanout_proc_cpu *out)
{
	char path[96];
	struct dirent *d;
	DIR *dir;

	out->oncpu_ns = 0;
	out->runq_wait_ns = 0;
	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	dir = opendir(path);
	if (!dir)
		return;
	while ((d = readdir(dir)) != NULL) {
		unsigned long long run, wait;
		FILE *f;

		if (d->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%.16s/schedstat", pid, d->d_name);
		f = fopen(path, "r");
		if (!f)
			continue;
		if (fscanf(f, "%llu %llu", &run, &wait) == 2) {
			out->oncpu_ns += run;
			out->runq_wait_ns += wait;
		}
		fclose(f);
	}
	closedir(dir);
}

int fanout_proc_cpu(int pid, struct fanout_proc_cpu *out)
{
	char path[64], line[1024], *p;
	unsigned long long utime, stime;
	long tck = sysconf(_SC_CLK_TCK);
	FILE *f;
	size_t n;

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	f = fopen(path, "r");
	if (!f)
		return -errno;
	n = fread(line, 1, sizeof(line) - 1, f);
	fclose(f);
	line[n] = '\0';
	/* comm (field 2) may hold spaces and parentheses: fields are counted
	 * from the last ')'. utime and stime are fields 14 and 15 (proc(5)). */
	p = strrchr(line, ')');
	if (!p || tck <= 0)
		return -EINVAL;
	if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
		   &utime, &stime) != 2)
		return -EINVAL;
	out->user_us = utime * 1000000ull / (unsigned long long)tck;
	out->sys_us = stime * 1000000ull / (unsigned long long)tck;
	sum_schedstat(pid, out);
	return 0;
}

int fanout_proc_rss(int pid, uint64_t *rss_bytes)
{
	char path[64], line[256];
	unsigned long long kib;
	int rc = -EINVAL;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	f = fopen(path, "r");
	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		if (sscanf(line, "VmRSS: %llu kB", &kib) == 1) {
			*rss_bytes = kib * 1024;
			rc = 0;
			break;
		}
	}
	fclose(f);
	return rc;
}

/* Children of `pid`: up to `cap` pids into `out`; returns how many. A
 * process that ends during the scan is skipped. */
static size_t children_of(int pid, int *out, size_t cap)
{
	struct dirent *d;
	size_t n = 0;
	DIR *dir = opendir("/proc");

	if (!dir)
		return 0;
	while (n < cap && (d = readdir(dir)) != NULL) {
		char path[64], line[128];
		int child = atoi(d->d_name), ppid = -1;
		FILE *f;

		if (child <= 0 || child == pid)
			continue;
		snprintf(path, sizeof(path), "/proc/%d/status", child);
		f = fopen(path, "r");
		if (!f)
			continue;
		while (fgets(line, sizeof(line), f))
			if (sscanf(line, "PPid: %d", &ppid) == 1)
				break;
		fclose(f);
		if (ppid == pid)
			out[n++] = child;
	}
	closedir(dir);
	return n;
}

/* A broker's processes, at most: the pids given (FANOUT_SERVER_PIDS_MAX) and
 * their children (nginx: worker_processes and cache helpers, 64 as before). */
#define SET_MAX_PROCS (FANOUT_SERVER_PIDS_MAX + 64)

static bool set_has(const int *set, size_t n, int pid)
{
	for (size_t i = 0; i < n; i++)
		if (set[i] == pid)
			return true;
	return false;
}

/* The pids in `pids` and their children, each once, into `set` (capacity
 * SET_MAX_PROCS); returns how many. A pid listed twice, or listed and also a
 * child of another listed pid, counts once. */
static size_t proc_set(const int *pids, size_t n, int *set)
{
	size_t count = 0;

	for (size_t i = 0; i < n && count < SET_MAX_PROCS; i++)
		if (!set_has(set, count, pids[i]))
			set[count++] = pids[i];
	for (size_t i = 0; i < n && count < SET_MAX_PROCS; i++) {
		int kids[SET_MAX_PROCS];
		size_t k = children_of(pids[i], kids, SET_MAX_PROCS - count);

		for (size_t j = 0; j < k; j++)
			if (!set_has(set, count, kids[j]))
				set[count++] = kids[j];
	}
	return count;
}

int fanout_proc_set_cpu(const int *pids, size_t n, struct fanout_proc_cpu *out)
{
	int set[SET_MAX_PROCS];
	size_t count;

	memset(out, 0, sizeof(*out));
	/* Every listed pid must be readable; a child that ended is skipped. */
	for (size_t i = 0; i < n; i++) {
		struct fanout_proc_cpu c;
		int rc = fanout_proc_cpu(pids[i], &c);

		if (rc < 0)
			return rc;
	}
	count = proc_set(pids, n, set);
	for (size_t i = 0; i < count; i++) {
		struct fanout_proc_cpu c;

		if (fanout_proc_cpu(set[i], &c) < 0)
			continue;
		out->user_us += c.user_us;
		out->sys_us += c.sys_us;
		out->oncpu_ns += c.oncpu_ns;
		out->runq_wait_ns += c.runq_wait_ns;
	}
	return 0;
}

int fanout_proc_set_rss(const int *pids, size_t n, uint64_t *rss_bytes)
{
	int set[SET_MAX_PROCS];
	size_t count;

	*rss_bytes = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t r;
		int rc = fanout_proc_rss(pids[i], &r);

		if (rc < 0)
			return rc;
	}
	count = proc_set(pids, n, set);
	for (size_t i = 0; i < count; i++) {
		uint64_t r;

		if (fanout_proc_rss(set[i], &r) == 0)
			*rss_bytes += r;
	}
	return 0;
}

void fanout_self_cpu(struct fanout_proc_cpu *out)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	out->user_us = (uint64_t)ru.ru_utime.tv_sec * 1000000u + (uint64_t)ru.ru_utime.tv_usec;
	out->sys_us = (uint64_t)ru.ru_stime.tv_sec * 1000000u + (uint64_t)ru.ru_stime.tv_usec;
	sum_schedstat((int)getpid(), out);
}

void fanout_raise_nofile(uint32_t need)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < need)
		fprintf(stderr, "bench_fanout: RLIMIT_NOFILE %llu is below the %u descriptors needed\n",
			(unsigned long long)rl.rlim_cur, need);
}
