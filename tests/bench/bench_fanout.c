/*
 * bench_fanout: one publisher, N WebSocket subscribers on one channel of a
 * broker on loopback. Prints one `key=value` per line (docs/bench-fanout.md
 * explains each) and exits 0 when every subscriber got every message exactly
 * once and in order, 1 when not, 2 on bad usage or when the harness could not
 * start.
 *
 *   bench_fanout --port 8080 --subscribers 1000 --mode inflight1 \
 *                --messages 2000 --server-pid PID
 */
#include "fanout/fanout.h"
#include "fanout/procs.h"

#include <arpa/inet.h>
#include <getopt.h>
#include <libwebsockets.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

static void usage(FILE *to)
{
	fprintf(to,
		"usage: bench_fanout --port PORT [options]\n"
		"  --broker NAME          broker operations table: tern, mosquitto, nchan (tern)\n"
		"  --host ADDR            numeric IPv4 address (127.0.0.1)\n"
		"  --channel NAME         channel (bench:fanout:PID)\n"
		"  --channels K           K channels NAME-0..NAME-K-1: subscriber i on i %% K,\n"
		"                         message i published on i %% K (1)\n"
		"  --subscribers N        WebSocket subscribers, 1-200000 (1000)\n"
		"  --source-addrs LIST    local IPv4 addresses subscribers connect from, round\n"
		"                         robin: A,B,... and/or ranges A-LAST (127.0.0.2-9);\n"
		"                         each gives ~28 000 ports, at most 64 addresses\n"
		"  --mode inflight1|rate  one message in flight, or a fixed rate (inflight1)\n"
		"  --messages M           messages to publish, at most (1000)\n"
		"  --rate R               rate mode: messages per second (1000)\n"
		"  --burst B              rate mode: messages sent back to back (1)\n"
		"  --window W             publishes awaiting their OK, at most (1000)\n"
		"  --backlog B            rate mode: messages not yet everywhere, at most\n"
		"                         (rate / 2, at most 200000 / subscribers, at least 2 bursts)\n"
		"  --bytes S              message size as the broker counts it, 34-4096 (64)\n"
		"  --duration-ms T        publish phase, at most (20000)\n"
		"  --connect-rate C       new connections per second (5000)\n"
		"  --connect-concurrency K  handshakes under way, at most (256)\n"
		"  --connect-timeout-ms T connect-and-subscribe phase, at most (60000)\n"
		"  --settle-ms T          idle wait before reading RSS (500)\n"
		"  --drain-timeout-ms T   wait without progress after the last publish (5000)\n"
		"  --drain-max-ms T       drain phase, at most (30000)\n"
		"  --message-timeout-ms T inflight1: one message to reach everyone (5000)\n"
		"  --server-pid PID[,PID] the broker's pids, for CPU and RSS from /proc, summed\n"
		"                         over them and their child processes (nginx workers);\n"
		"                         repeatable, %d pids at most (tern node + tern edge)\n"
		"  --floor                no broker: measure the kernel's send() floor for\n"
		"                         --subscribers connections, --floor-bytes (70) per message\n"
		"  --floor-bytes S        message size for --floor, 1-8192\n"
		"  --procs P              spread the subscribers over P processes, 1-%d (1),\n"
		"                         for more connections than RLIMIT_NOFILE lets one\n"
		"                         process hold; inflight1 only\n"
		"  --label TEXT           printed as workload=TEXT\n"
		"  --verbose              phase changes and unreadable frames on stderr\n",
		FANOUT_SERVER_PIDS_MAX, FANOUT_PROCS_MAX);
}

static bool channel_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 200)
		return false;
	for (; *s; s++)
		if (!(*s >= 'a' && *s <= 'z') && !(*s >= 'A' && *s <= 'Z') &&
		    !(*s >= '0' && *s <= '9') && !strchr(":._-", *s))
			return false;
	return true;
}

static double per(double num, double den)
{
	return den > 0 ? num / den : 0;
}

static void report(const struct fanout_config *cfg, const struct fanout_result *r,
		   const char *label, uint32_t procs)
{
	double deliver_s = (double)r->deliver_ns / 1e9;
	double broker_us = (double)(r->broker_cpu.user_us + r->broker_cpu.sys_us);
	double self_us = (double)(r->harness_cpu.user_us + r->harness_cpu.sys_us);
	double d = (double)r->deliveries;
	struct rusage ru;

	printf("bench=fanout\n");
	if (label)
		printf("workload=%s\n", label);
	printf("broker=%s\nmode=%s\nsubscribers=%u\nchannels=%u\nmsg_bytes=%u\n",
	       cfg->ops->name, cfg->mode == FANOUT_MODE_RATE ? "rate" : "inflight1",
	       cfg->subscribers, cfg->channels > 1 ? cfg->channels : 1, cfg->msg_bytes);
	if (cfg->mode == FANOUT_MODE_RATE)
		printf("rate_target_per_s=%.0f\nburst=%u\n", cfg->rate, cfg->burst);
	if (procs > 1)
		printf("procs=%u\n", procs);
	printf("result=%s\n", r->pass ? "PASS" : "FAIL");
	if (!r->pass)
		printf("reason=%s\n", r->reason);
	printf("subscribed=%u\nconnect_failed=%u\nclosed_by_broker=%u\nslow_consumer_closes=%u\n",
	       r->subscribed, r->connect_failed, r->closed_by_broker, r->slow_consumer);
	printf("published=%llu\nacked=%llu\npublish_errors=%llu\n",
	       (unsigned long long)r->published, (unsigned long long)r->acked,
	       (unsigned long long)r->publish_errors);
	printf("expected_deliveries=%llu\ndeliveries=%llu\nlost=%llu\nduplicated=%llu\n"
	       "reordered=%llu\nseq_gaps=%llu\nseq_mismatch=%llu\nerror_frames=%llu\n"
	       "bad_frames=%llu\n",
	       (unsigned long long)r->expected, (unsigned long long)r->deliveries,
	       (unsigned long long)r->lost, (unsigned long long)r->duplicated,
	       (unsigned long long)r->reordered, (unsigned long long)r->seq_gaps,
	       (unsigned long long)r->seq_mismatch, (unsigned long long)r->errors,
	       (unsigned long long)r->bad_frames);
	printf("connect_s=%.3f\nconnect_rate_per_s=%.0f\npublish_s=%.3f\ndeliver_s=%.3f\n"
	       "publish_rate_per_s=%.1f\nheld_ticks=%llu\ndeliveries_per_s=%.0f\n",
	       (double)r->connect_ns / 1e9, per(r->subscribed, (double)r->connect_ns / 1e9),
	       (double)r->publish_ns / 1e9, deliver_s,
	       r->publish_rate, (unsigned long long)r->held_ticks, per(d, deliver_s));
	printf("latency_us_p50=%.1f\nlatency_us_p99=%.1f\nlatency_us_p999=%.1f\n"
	       "latency_us_max=%.1f\nack_latency_us_p50=%.1f\nack_latency_us_p99=%.1f\n",
	       fanout_hist_quantile(&r->latency, 0.50) / 1e3,
	       fanout_hist_quantile(&r->latency, 0.99) / 1e3,
	       fanout_hist_quantile(&r->latency, 0.999) / 1e3, r->latency.max_ns / 1e3,
	       fanout_hist_quantile(&r->ack, 0.50) / 1e3,
	       fanout_hist_quantile(&r->ack, 0.99) / 1e3);
	if (r->have_server) {
		printf("broker_cpu_us_per_delivery=%.3f\nbroker_user_us_per_delivery=%.3f\n"
		       "broker_sys_us_per_delivery=%.3f\nbroker_cpu_ms=%.0f\n"
		       "broker_cpu_cores=%.2f\n",
		       per(broker_us, d), per((double)r->broker_cpu.user_us, d),
		       per((double)r->broker_cpu.sys_us, d), broker_us / 1e3,
		       per(broker_us / 1e6, deliver_s));
		printf("broker_oncpu_us_per_delivery=%.3f\nbroker_runq_wait_ms=%.0f\n",
		       per((double)r->broker_cpu.oncpu_ns / 1e3, d),
		       (double)r->broker_cpu.runq_wait_ns / 1e6);
		printf("broker_connect_cpu_us_per_conn=%.1f\n",
		       per((double)(r->broker_connect_cpu.user_us + r->broker_connect_cpu.sys_us),
			   r->subscribed));
		printf("broker_rss_before_kib=%llu\nbroker_rss_after_kib=%llu\n"
		       "broker_rss_bytes_per_conn=%.0f\n",
		       (unsigned long long)r->rss_before / 1024,
		       (unsigned long long)r->rss_after / 1024,
		       per((double)r->rss_after - (double)r->rss_before, r->subscribed));
	}
	printf("harness_cpu_us_per_delivery=%.3f\nharness_cpu_cores=%.2f\nharness_runq_wait_ms=%.0f\n",
	       per(self_us, d), per(self_us / 1e6, deliver_s),
	       (double)r->harness_cpu.runq_wait_ns / 1e6);
	if (getrusage(RUSAGE_SELF, &ru) == 0) /* peak: what holding N connections took */
		printf("harness_maxrss_kib=%ld\n", ru.ru_maxrss);
	fflush(stdout);
}

enum {
	OPT_BROKER = 256, OPT_HOST, OPT_PORT, OPT_CHANNEL, OPT_CHANNELS, OPT_SUBS, OPT_MODE, OPT_MESSAGES,
	OPT_RATE, OPT_BURST, OPT_WINDOW, OPT_BACKLOG, OPT_BYTES, OPT_DURATION, OPT_CRATE,
	OPT_CCONC, OPT_CTIMEOUT, OPT_SETTLE, OPT_DRAIN, OPT_DMAX, OPT_MTIMEOUT, OPT_PID, OPT_LABEL,
	OPT_VERBOSE, OPT_FLOOR, OPT_FLOOR_BYTES, OPT_SOURCE_ADDRS, OPT_PROCS, OPT_HELP,
};

static const struct option options[] = {
	{ "broker", required_argument, NULL, OPT_BROKER },
	{ "host", required_argument, NULL, OPT_HOST },
	{ "port", required_argument, NULL, OPT_PORT },
	{ "channel", required_argument, NULL, OPT_CHANNEL },
	{ "channels", required_argument, NULL, OPT_CHANNELS },
	{ "subscribers", required_argument, NULL, OPT_SUBS },
	{ "mode", required_argument, NULL, OPT_MODE },
	{ "messages", required_argument, NULL, OPT_MESSAGES },
	{ "rate", required_argument, NULL, OPT_RATE },
	{ "burst", required_argument, NULL, OPT_BURST },
	{ "window", required_argument, NULL, OPT_WINDOW },
	{ "backlog", required_argument, NULL, OPT_BACKLOG },
	{ "bytes", required_argument, NULL, OPT_BYTES },
	{ "duration-ms", required_argument, NULL, OPT_DURATION },
	{ "connect-rate", required_argument, NULL, OPT_CRATE },
	{ "connect-concurrency", required_argument, NULL, OPT_CCONC },
	{ "connect-timeout-ms", required_argument, NULL, OPT_CTIMEOUT },
	{ "settle-ms", required_argument, NULL, OPT_SETTLE },
	{ "drain-timeout-ms", required_argument, NULL, OPT_DRAIN },
	{ "drain-max-ms", required_argument, NULL, OPT_DMAX },
	{ "message-timeout-ms", required_argument, NULL, OPT_MTIMEOUT },
	{ "server-pid", required_argument, NULL, OPT_PID },
	{ "label", required_argument, NULL, OPT_LABEL },
	{ "verbose", no_argument, NULL, OPT_VERBOSE },
	{ "floor", no_argument, NULL, OPT_FLOOR },
	{ "floor-bytes", required_argument, NULL, OPT_FLOOR_BYTES },
	{ "source-addrs", required_argument, NULL, OPT_SOURCE_ADDRS },
	{ "procs", required_argument, NULL, OPT_PROCS },
	{ "help", no_argument, NULL, OPT_HELP },
	{ NULL, 0, NULL, 0 },
};

/* Parses an unsigned number in [lo, hi] into *out. Returns 0 or -1. */
static int num(const char *s, double lo, double hi, double *out)
{
	char *end;
	double v = strtod(s, &end);

	if (end == s || *end != '\0' || v < lo || v > hi)
		return -1;
	*out = v;
	return 0;
}

/* Parses --source-addrs: items separated by commas, each a numeric IPv4
 * address or a range A.B.C.D-E of the last byte. Checks the count against
 * FANOUT_SOURCE_ADDRS_MAX before storing anything. Returns 0 or -1. */
static int source_addrs_parse(const char *list, struct fanout_config *cfg)
{
	static char text[FANOUT_SOURCE_ADDRS_MAX][INET_ADDRSTRLEN];
	static const char *ptrs[FANOUT_SOURCE_ADDRS_MAX];
	char item[64];
	uint32_t n = 0;

	for (const char *p = list; *p;) {
		size_t len = strcspn(p, ",");
		char *dash, *end;
		struct in_addr a;
		unsigned long last;
		unsigned first;

		if (len == 0 || len >= sizeof(item))
			return -1;
		memcpy(item, p, len);
		item[len] = '\0';
		p += len + (p[len] == ',');
		dash = strchr(item, '-');
		if (dash)
			*dash = '\0';
		if (inet_pton(AF_INET, item, &a) != 1)
			return -1;
		first = ntohl(a.s_addr) & 0xff;
		last = first;
		if (dash) {
			last = strtoul(dash + 1, &end, 10);
			if (end == dash + 1 || *end != '\0' || last < first || last > 255)
				return -1;
		}
		if (n + (last - first + 1) > FANOUT_SOURCE_ADDRS_MAX) {
			fprintf(stderr, "bench_fanout: --source-addrs: more than %d addresses\n",
				FANOUT_SOURCE_ADDRS_MAX);
			return -1;
		}
		for (unsigned long b = first; b <= last; b++, n++) {
			a.s_addr = htonl((ntohl(a.s_addr) & ~0xffu) | (uint32_t)b);
			inet_ntop(AF_INET, &a, text[n], sizeof(text[n]));
			ptrs[n] = text[n];
		}
	}
	if (n == 0)
		return -1;
	cfg->source_addrs = ptrs;
	cfg->nsource_addrs = n;
	return 0;
}

/* Raises RLIMIT_NOFILE and says whether `need` descriptors fit: a run that
 * cannot open them all is refused at once, not reported as a broker failure. */
static bool nofile_enough(uint32_t need)
{
	struct rlimit rl;

	fanout_raise_nofile(need);
	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur == RLIM_INFINITY ||
	    rl.rlim_cur >= need)
		return true;
	fprintf(stderr, "bench_fanout: %u subscribers need %u descriptors; RLIMIT_NOFILE is "
		"%llu (hard %llu). Raise ulimit -Hn (needs CAP_SYS_RESOURCE)\n",
		need - 64, need, (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max);
	return false;
}

/* Adds the comma-separated pids in `s` to cfg->server_pids. Returns 0, or -1
 * on a bad pid or one past FANOUT_SERVER_PIDS_MAX. */
static int add_pids(const char *s, struct fanout_config *cfg)
{
	char buf[256], *save = NULL;
	double v;

	if (strlen(s) >= sizeof(buf))
		return -1;
	strcpy(buf, s);
	for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		if (cfg->server_pid_count == FANOUT_SERVER_PIDS_MAX || num(t, 1, 1 << 30, &v) < 0)
			return -1;
		cfg->server_pids[cfg->server_pid_count++] = (int)v;
	}
	return 0;
}

struct floor_opts {
	bool run;
	uint32_t msg_bytes;
};

struct run_opts {
	const char *label;
	uint32_t procs;
	struct floor_opts floor;
};

static int parse_args(int argc, char **argv, struct fanout_config *cfg, struct run_opts *ro)
{
	struct floor_opts *floor = &ro->floor;
	int opt;
	double v = 0;

	while ((opt = getopt_long(argc, argv, "", options, NULL)) != -1) {
		const char *a = optarg;
		int bad = 0;

		switch (opt) {
		case OPT_BROKER:
			cfg->ops = fanout_broker_find(a);
			bad = !cfg->ops;
			break;
		case OPT_HOST: cfg->host = a; break;
		case OPT_PORT: bad = num(a, 1, 65535, &v); cfg->port = (int)v; break;
		case OPT_CHANNEL: cfg->channel = a; bad = !channel_ok(a); break;
		case OPT_CHANNELS: bad = num(a, 1, 60000, &v); cfg->channels = (uint32_t)v; break;
		case OPT_SUBS:
			bad = num(a, 1, FANOUT_SUBSCRIBERS_MAX, &v);
			cfg->subscribers = (uint32_t)v;
			break;
		case OPT_MODE:
			bad = strcmp(a, "inflight1") && strcmp(a, "rate");
			cfg->mode = strcmp(a, "rate") ? FANOUT_MODE_INFLIGHT1 : FANOUT_MODE_RATE;
			break;
		case OPT_MESSAGES: bad = num(a, 1, 1e7, &v); cfg->messages = (uint64_t)v; break;
		case OPT_RATE: bad = num(a, 0.001, 1e7, &v); cfg->rate = v; break;
		case OPT_BURST: bad = num(a, 1, 100000, &v); cfg->burst = (uint32_t)v; break;
		case OPT_WINDOW: bad = num(a, 1, 1e6, &v); cfg->window = (uint32_t)v; break;
		case OPT_BACKLOG: bad = num(a, 1, 1e7, &v); cfg->backlog_max = (uint64_t)v; break;
		case OPT_BYTES: bad = num(a, 34, 4096, &v); cfg->msg_bytes = (uint32_t)v; break;
		case OPT_DURATION: bad = num(a, 1, 3.6e6, &v); cfg->duration_ms = (uint32_t)v; break;
		case OPT_CRATE: bad = num(a, 1, 1e6, &v); cfg->connect_rate = (uint32_t)v; break;
		case OPT_CCONC: bad = num(a, 1, 60000, &v); cfg->connect_concurrency = (uint32_t)v; break;
		case OPT_CTIMEOUT: bad = num(a, 1, 3.6e6, &v); cfg->connect_timeout_ms = (uint32_t)v; break;
		case OPT_SETTLE: bad = num(a, 0, 60000, &v); cfg->settle_ms = (uint32_t)v; break;
		case OPT_DRAIN: bad = num(a, 1, 600000, &v); cfg->drain_timeout_ms = (uint32_t)v; break;
		case OPT_DMAX: bad = num(a, 1, 3.6e6, &v); cfg->drain_max_ms = (uint32_t)v; break;
		case OPT_MTIMEOUT: bad = num(a, 1, 600000, &v); cfg->message_timeout_ms = (uint32_t)v; break;
		case OPT_PID: bad = add_pids(a, cfg); break;
		case OPT_LABEL: ro->label = a; break;
		case OPT_VERBOSE: cfg->verbose = true; break;
		case OPT_FLOOR: floor->run = true; break;
		case OPT_FLOOR_BYTES: bad = num(a, 1, 8192, &v); floor->msg_bytes = (uint32_t)v; break;
		case OPT_SOURCE_ADDRS: bad = source_addrs_parse(a, cfg) < 0; break;
		case OPT_PROCS: bad = num(a, 1, FANOUT_PROCS_MAX, &v); ro->procs = (uint32_t)v; break;
		case OPT_HELP: usage(stdout); exit(0);
		default: return -1;
		}
		if (bad) {
			fprintf(stderr, "bench_fanout: bad value for --%s: %s\n",
				options[opt - OPT_BROKER].name, a);
			return -1;
		}
	}
	if (optind != argc || (cfg->port == 0 && !floor->run)) {
		fprintf(stderr, "bench_fanout: --port is required and there are no operands\n");
		return -1;
	}
	if (ro->procs > 1 && (cfg->mode != FANOUT_MODE_INFLIGHT1 || floor->run)) {
		fprintf(stderr, "bench_fanout: --procs above 1 is for --mode inflight1 only\n");
		return -1;
	}
	if (ro->procs > cfg->subscribers) {
		fprintf(stderr, "bench_fanout: --procs %u is more than --subscribers %u\n",
			ro->procs, cfg->subscribers);
		return -1;
	}
	return 0;
}

static int run_floor(const struct fanout_config *cfg, const struct floor_opts *floor,
		     const char *label)
{
	double us[4];
	int rc;

	fanout_raise_nofile(cfg->subscribers + 64);
	rc = fanout_floor(cfg->subscribers, floor->msg_bytes, us);
	if (rc < 0) {
		fprintf(stderr, "bench_fanout: floor: %s\n", strerror(-rc));
		return 2;
	}
	printf("bench=fanout-floor\n");
	if (label)
		printf("workload=%s\n", label);
	printf("connections=%u\nmsg_bytes=%u\nfloor_us_per_msg_1=%.3f\nfloor_us_per_msg_8=%.3f\n"
	       "floor_us_per_msg_32=%.3f\nfloor_us_per_msg_inflight1=%.3f\n",
	       cfg->subscribers, floor->msg_bytes, us[0], us[1], us[2], us[3]);
	return 0;
}

/* --procs P above 1: forks P - 1 children before any loop exists; each
 * process runs its slice of the subscribers at its share of the connect rate
 * and concurrency; the parent publishes, merges and reports. Returns the
 * exit status. */
static int run_spread(struct fanout_config *cfg, const struct run_opts *ro,
		      struct fanout_result *res)
{
	uint32_t p = ro->procs, rate = cfg->connect_rate, conc = cfg->connect_concurrency;
	struct fanout_shared *sh;
	int k, rc;

	if (!nofile_enough((cfg->subscribers + p - 1) / p + 64))
		return 2;
	rc = fanout_shared_create(p, cfg->messages, cfg->channels > 1 ? cfg->channels : 1, &sh);
	if (rc < 0) {
		fprintf(stderr, "bench_fanout: cannot map the shared region: %s\n", strerror(-rc));
		return 2;
	}
	fflush(stdout); /* nothing buffered may be written twice */
	fflush(stderr);
	k = fanout_procs_fork(sh);
	if (k < 0) {
		fprintf(stderr, "bench_fanout: cannot fork: %s\n", strerror(-k));
		fanout_shared_free(sh);
		return 2;
	}
	cfg->shared = sh;
	cfg->proc = (uint32_t)k;
	fanout_procs_slice(cfg->subscribers, p, cfg->proc, &cfg->sub_first, &cfg->sub_count);
	cfg->connect_rate = (rate + p - 1) / p;
	cfg->connect_concurrency = (conc + p - 1) / p;
	if (k > 0) {
		cfg->server_pid_count = 0; /* the broker is the parent's to read */
		rc = fanout_run(cfg, res);
		fanout_procs_child_exit(sh, cfg->proc, rc, res);
	}
	rc = fanout_run(cfg, res);
	if (rc < 0) {
		fanout_procs_kill(sh);
		fanout_shared_free(sh);
		fprintf(stderr, "bench_fanout: cannot run: %s\n", strerror(-rc));
		return 2;
	}
	report(cfg, res, ro->label, p);
	fanout_shared_free(sh);
	return res->pass ? 0 : 1;
}

int main(int argc, char **argv)
{
	static struct fanout_result res; /* two histograms: not for the stack */
	static char channel[64];
	struct fanout_config cfg = {
		.ops = &fanout_broker_tern,
		.host = "127.0.0.1",
		.subscribers = 1000,
		.mode = FANOUT_MODE_INFLIGHT1,
		.messages = 1000,
		.rate = 1000,
		.burst = 1,
		.window = 1000,
		.msg_bytes = 64,
		.duration_ms = 20000,
		.connect_rate = 5000,
		.connect_concurrency = 256,
		.connect_timeout_ms = 60000,
		.settle_ms = 500,
		.drain_timeout_ms = 5000,
		.drain_max_ms = 30000,
		.message_timeout_ms = 5000,
	};
	struct run_opts ro = { .procs = 1, .floor = { .msg_bytes = 70 } };
	int rc;

	if (parse_args(argc, argv, &cfg, &ro) < 0) {
		usage(stderr);
		return 2;
	}
	if (ro.floor.run)
		return run_floor(&cfg, &ro.floor, ro.label);
	if (!cfg.channel) {
		snprintf(channel, sizeof(channel), "bench:fanout:%d", (int)getpid());
		cfg.channel = channel;
	}
	if (cfg.backlog_max == 0) {
		/* Half a second of the rate, but at most 200 000 deliveries
		 * outstanding, so that the drain after an overload takes a few
		 * seconds, not minutes; never under two bursts. */
		double per_msg = (double)cfg.subscribers / (cfg.channels > 1 ? cfg.channels : 1);
		double b = cfg.rate / 2, cap = 200000.0 / (per_msg >= 1 ? per_msg : 1);

		b = b < cap ? b : cap;
		b = b > 2.0 * cfg.burst ? b : 2.0 * cfg.burst;
		cfg.backlog_max = (uint64_t)b;
	}
	lws_set_log_level(LLL_ERR, NULL);
	if (ro.procs > 1)
		return run_spread(&cfg, &ro, &res);
	if (!nofile_enough(cfg.subscribers + 64))
		return 2;
	rc = fanout_run(&cfg, &res);
	if (rc < 0) {
		fprintf(stderr, "bench_fanout: cannot run: %s\n", strerror(-rc));
		return 2;
	}
	report(&cfg, &res, ro.label, 1);
	return res.pass ? 0 : 1;
}
