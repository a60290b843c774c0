/* The supervisor of `tern edge --workers W` (edge_workers.h). It runs no loop of
 * libuv's: everything it waits for (signals through a signalfd, each starting
 * worker's ready pipe, a restart's pause) goes through one poll(). */
#include "edge_workers.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tern_limits.h"

struct worker {
	pid_t pid;          /* 0: not running */
	int ready_fd;       /* read end while starting, else -1 */
	bool ready;         /* this start said it listens */
	bool ever_ready;    /* some start of worker k did */
	uint64_t started_ms;
	uint64_t restart_at_ms; /* 0: none pending */
	uint64_t pause_ms;  /* the next restart's pause */
};

struct sup {
	struct tern_config *cfg;
	edge_worker_fn fn;
	struct worker w[TERN_EDGE_WORKERS_MAX];
	int n;
	int sfd;            /* signalfd: SIGCHLD, SIGTERM, SIGINT */
	sigset_t old_mask;  /* what workers run with */
	pid_t self;
	bool stopping;
	bool failed;        /* a worker exited non-zero while stopping, or never started */
	uint64_t kill_at_ms; /* stopping: SIGKILL what is left then */
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void describe(int status, char *buf, size_t len)
{
	if (WIFSIGNALED(status))
		snprintf(buf, len, "was killed by signal %d (%s)", WTERMSIG(status),
			 strsignal(WTERMSIG(status)));
	else
		snprintf(buf, len, "exited with status %d", WEXITSTATUS(status));
}

static int spawn(struct sup *s, int k)
{
	struct worker *w = &s->w[k];
	int p[2];
	if (pipe2(p, O_CLOEXEC) != 0) {
		fprintf(stderr, "tern: edge worker %d: pipe: %s\n", k, strerror(errno));
		return -1;
	}
	fflush(NULL);
	pid_t pid = fork();
	if (pid < 0) {
		fprintf(stderr, "tern: edge worker %d: fork: %s\n", k, strerror(errno));
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (pid == 0) {
		close(p[0]);
		close(s->sfd);
		for (int i = 0; i < s->n; i++)
			if (s->w[i].ready_fd >= 0)
				close(s->w[i].ready_fd);
		/* Off the terminal's process group: Ctrl-C reaches the workers
		 * once, through the supervisor. */
		setpgid(0, 0);
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		if (getppid() != s->self)
			_exit(1); /* the supervisor died before prctl */
		/* SIGTERM and SIGINT stay blocked until the worker's own handlers
		 * are in (edge_worker_fn): a stop sent while it starts is then a
		 * drain once it can drain, not a death half-way through its start. */
		sigset_t m = s->old_mask;
		sigaddset(&m, SIGTERM);
		sigaddset(&m, SIGINT);
		sigprocmask(SIG_SETMASK, &m, NULL);
		exit(s->fn(s->cfg, k, p[1]));
	}
	close(p[1]);
	w->pid = pid;
	w->ready_fd = p[0];
	w->ready = false;
	w->started_ms = now_ms();
	w->restart_at_ms = 0;
	return 0;
}

static void stop_all(struct sup *s)
{
	if (s->stopping)
		return;
	s->stopping = true;
	s->kill_at_ms = now_ms() + TERN_EDGE_WORKER_STOP_MS;
	for (int k = 0; k < s->n; k++) {
		s->w[k].restart_at_ms = 0;
		if (s->w[k].pid > 0)
			kill(s->w[k].pid, SIGTERM);
	}
}

static int running(const struct sup *s)
{
	int r = 0;
	for (int k = 0; k < s->n; k++)
		r += s->w[k].pid > 0;
	return r;
}

static void close_ready(struct worker *w)
{
	if (w->ready_fd >= 0)
		close(w->ready_fd);
	w->ready_fd = -1;
}

/* Reads a starting worker's pipe: one byte says it listens, EOF that it died
 * (reap says how). */
static void on_ready(struct sup *s, int k)
{
	struct worker *w = &s->w[k];
	char c;
	ssize_t r = read(w->ready_fd, &c, 1);
	if (r < 0 && (errno == EINTR || errno == EAGAIN))
		return;
	if (r == 1)
		w->ready = w->ever_ready = true;
	close_ready(w);
}

/* Collects every worker that ended; schedules its restart unless stopping. */
static void reap(struct sup *s)
{
	int status;
	pid_t pid;
	while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
		for (int k = 0; k < s->n; k++) {
			struct worker *w = &s->w[k];
			if (w->pid != pid)
				continue;
			if (w->ready_fd >= 0)
				on_ready(s, k); /* its byte may still be in the pipe */
			char how[96];
			describe(status, how, sizeof(how));
			w->pid = 0;
			close_ready(w);
			if (s->stopping) {
				if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
					fprintf(stderr, "tern: edge worker %d (pid %d) %s while stopping\n",
						k, (int)pid, how);
					s->failed = true;
				}
				break;
			}
			if (!w->ever_ready) {
				/* The first start failed: its worker said why. */
				fprintf(stderr, "tern: edge worker %d (pid %d) %s before listening\n", k,
					(int)pid, how);
				s->failed = true;
				stop_all(s);
				break;
			}
			uint64_t now = now_ms();
			if (now - w->started_ms >= TERN_EDGE_WORKER_YOUNG_MS || w->pause_ms == 0)
				w->pause_ms = TERN_EDGE_WORKER_RESTART_MIN_MS;
			else if (w->pause_ms < TERN_EDGE_WORKER_RESTART_MAX_MS / 2)
				w->pause_ms *= 2;
			else
				w->pause_ms = TERN_EDGE_WORKER_RESTART_MAX_MS;
			w->restart_at_ms = now + w->pause_ms;
			fprintf(stderr, "tern: edge worker %d (pid %d) %s; starting another in %llu ms\n",
				k, (int)pid, how, (unsigned long long)w->pause_ms);
			break;
		}
	}
}

static void on_signal(struct sup *s)
{
	struct signalfd_siginfo si;
	while (read(s->sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
		if (si.ssi_signo == SIGCHLD) {
			reap(s);
			continue;
		}
		if (!s->stopping)
			fprintf(stderr, "tern: %s received, draining %d edge workers\n",
				si.ssi_signo == SIGTERM ? "SIGTERM" : "SIGINT", running(s));
		stop_all(s);
	}
}

static bool all_ready(const struct sup *s)
{
	for (int k = 0; k < s->n; k++)
		if (s->w[k].pid <= 0 || !s->w[k].ready)
			return false;
	return true;
}

/* Every worker listens: the caller says so, naming their pids. */
static void announce(const struct sup *s, void (*started)(void *arg, const char *pids), void *arg)
{
	char pids[TERN_EDGE_WORKERS_MAX * 12] = "";
	size_t off = 0;
	for (int k = 0; k < s->n && off < sizeof(pids); k++)
		off += (size_t)snprintf(pids + off, sizeof(pids) - off, "%s%d", k ? "," : "",
					(int)s->w[k].pid);
	started(arg, pids);
}

int edge_workers_run(struct tern_config *cfg, edge_worker_fn fn,
		     void (*started)(void *arg, const char *pids), void *arg)
{
	struct sup *s = calloc(1, sizeof(*s));
	if (!s)
		return 1;
	s->cfg = cfg;
	s->fn = fn;
	s->n = (int)cfg->workers;
	s->self = getpid();
	for (int k = 0; k < s->n; k++)
		s->w[k].ready_fd = -1;
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigprocmask(SIG_BLOCK, &mask, &s->old_mask);
	s->sfd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
	if (s->sfd < 0) {
		fprintf(stderr, "tern: signalfd: %s\n", strerror(errno));
		sigprocmask(SIG_SETMASK, &s->old_mask, NULL);
		free(s);
		return 1;
	}
	for (int k = 0; k < s->n && !s->failed; k++)
		if (spawn(s, k) != 0) {
			s->failed = true;
			stop_all(s);
		}
	uint64_t ready_by = now_ms() + TERN_EDGE_WORKER_READY_MS;
	bool announced = false;
	while (running(s) > 0 || (!s->stopping && !s->failed)) {
		struct pollfd pfd[1 + TERN_EDGE_WORKERS_MAX];
		int who[1 + TERN_EDGE_WORKERS_MAX], np = 1;
		pfd[0] = (struct pollfd){.fd = s->sfd, .events = POLLIN};
		uint64_t now = now_ms(), wake = now + 1000;
		for (int k = 0; k < s->n; k++) {
			struct worker *w = &s->w[k];
			if (w->ready_fd >= 0) {
				pfd[np] = (struct pollfd){.fd = w->ready_fd, .events = POLLIN};
				who[np++] = k;
			}
			if (w->restart_at_ms && w->restart_at_ms < wake)
				wake = w->restart_at_ms;
		}
		if (!announced && !s->stopping && ready_by < wake)
			wake = ready_by;
		if (s->stopping && s->kill_at_ms < wake)
			wake = s->kill_at_ms;
		int r = poll(pfd, (nfds_t)np, wake > now ? (int)(wake - now) : 0);
		if (r < 0 && errno != EINTR) {
			fprintf(stderr, "tern: poll: %s\n", strerror(errno));
			s->failed = true;
			stop_all(s);
		}
		if (r > 0 && pfd[0].revents)
			on_signal(s);
		for (int i = 1; r > 0 && i < np; i++)
			if (pfd[i].revents && s->w[who[i]].ready_fd == pfd[i].fd)
				on_ready(s, who[i]);
		now = now_ms();
		if (!announced && !s->stopping && all_ready(s)) {
			announce(s, started, arg);
			announced = true;
		}
		if (!announced && !s->stopping && now >= ready_by) {
			fprintf(stderr, "tern: edge workers did not all listen within %d ms\n",
				TERN_EDGE_WORKER_READY_MS);
			s->failed = true;
			stop_all(s);
		}
		for (int k = 0; k < s->n && !s->stopping; k++)
			if (s->w[k].restart_at_ms && now >= s->w[k].restart_at_ms && spawn(s, k) != 0)
				s->w[k].restart_at_ms = now + TERN_EDGE_WORKER_RESTART_MAX_MS;
		if (s->stopping && now >= s->kill_at_ms) {
			for (int k = 0; k < s->n; k++)
				if (s->w[k].pid > 0) {
					fprintf(stderr, "tern: edge worker %d (pid %d) still running %d ms "
							"after SIGTERM: killing it\n",
						k, (int)s->w[k].pid, TERN_EDGE_WORKER_STOP_MS);
					kill(s->w[k].pid, SIGKILL);
				}
			s->failed = true;
			s->kill_at_ms = now + 1000;
		}
	}
	for (int k = 0; k < s->n; k++)
		close_ready(&s->w[k]);
	close(s->sfd);
	sigprocmask(SIG_SETMASK, &s->old_mask, NULL);
	int rc = s->failed ? 1 : 0;
	if (announced)
		fprintf(stderr, "tern: stopped\n");
	free(s);
	return rc;
}
