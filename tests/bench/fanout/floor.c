/*
 * The kernel's floor for fan-out on this machine, measured now: the CPU one
 * process spends in send() to deliver a small message to each of N loopback
 * TCP connections, one message per send() and several per send(). A broker
 * can only approach these figures; measuring them beside the broker's makes
 * "within 10 % of the floor" checkable on a loaded machine.
 *
 * The receiving ends live in a forked child that only drains them, so the
 * parent's getrusage() holds the sending side alone (on loopback that
 * includes the receive path the kernel runs inside send()).
 *
 * Two patterns. Back to back: send() in a tight loop, the receiver busy
 * draining; the cheapest a send() gets. One in flight: one message to each
 * connection, then wait (asleep) until the receiver has all of them, then
 * the next, which is what a broker does with one message in flight: the
 * receiver sleeps between messages, so each round's sends wake it, and the
 * sender's caches go cold while it waits. The child tells the parent over a
 * pipe each time it has read one more message from every connection.
 */
#include "fanout.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

/* Sends per measurement: enough for ~1 s at 5 µs, short enough for a run. */
#define FLOOR_SENDS 200000
/* Rounds per figure; the median is reported. */
#define FLOOR_ROUNDS 3

/* Reads until every connection closed. Each time the bytes read reach one
 * more multiple of `unit` (a message to every connection), writes a byte to
 * ack_fd, which is non-blocking: while nobody waits the pipe fills and acks
 * are dropped. */
static int drain_child(int lfd, uint32_t n, uint64_t unit, int ack_fd)
{
	struct epoll_event ev, evs[256];
	static char buf[65536];
	uint32_t open = 0, accepted = 0;
	uint64_t total = 0, acked = 0;
	int ep = epoll_create1(0);

	if (ep < 0)
		return 1;
	while (accepted < n) {
		int fd = accept(lfd, NULL, NULL);

		if (fd < 0)
			return 1;
		ev.events = EPOLLIN;
		ev.data.fd = fd;
		if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
			return 1;
		accepted++;
		open++;
	}
	close(lfd);
	while (open > 0) {
		int k = epoll_wait(ep, evs, 256, 30000);

		if (k <= 0)
			return 1; /* the parent went quiet for 30 s: give up */
		for (int i = 0; i < k; i++) {
			ssize_t r = read(evs[i].data.fd, buf, sizeof(buf));

			if (r == 0 || (r < 0 && errno != EAGAIN && errno != EINTR)) {
				close(evs[i].data.fd);
				open--;
			} else if (r > 0) {
				total += (uint64_t)r;
				for (; acked < total / unit; acked++)
					if (write(ack_fd, "a", 1) < 0) {
						/* full: nobody is waiting */
					}
			}
		}
	}
	return 0;
}

static int listen_any(uint16_t *port)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_STREAM, 0);

	if (fd < 0)
		return -errno;
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(fd, 4096) < 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
		int rc = -errno;

		close(fd);
		return rc;
	}
	*port = ntohs(sa.sin_port);
	return fd;
}

/* CPU µs per message with `batch` messages of `msg_bytes` in each send(). */
static double measure(const int *fds, uint32_t n, uint32_t msg_bytes, uint32_t batch)
{
	static char buf[32 * 8192]; /* 32 messages of the largest --floor-bytes */
	struct fanout_proc_cpu a, b;
	uint64_t sends = FLOOR_SENDS / batch < n ? n : FLOOR_SENDS / batch;
	uint64_t rounds = sends / n, done = 0;
	size_t len = (size_t)msg_bytes * batch;

	if (len > sizeof(buf))
		return -1;
	memset(buf, 'x', len);
	fanout_self_cpu(&a);
	for (uint64_t r = 0; r < rounds; r++)
		for (uint32_t i = 0; i < n; i++)
			if (send(fds[i], buf, len, 0) == (ssize_t)len)
				done++;
	fanout_self_cpu(&b);
	if (done == 0)
		return -1;
	return (double)(b.user_us - a.user_us + b.sys_us - a.sys_us) / (double)(done * batch);
}

/* CPU µs per message with one message in flight: `rounds` times, one
 * message to each connection, then sleep on ack_fd until the child read them. */
static double measure_in_flight(const int *fds, uint32_t n, uint32_t msg_bytes, int ack_fd)
{
	static char buf[8192];
	struct fanout_proc_cpu a, b;
	uint64_t rounds = FLOOR_SENDS / n ? FLOOR_SENDS / n : 1, done = 0;
	char c;

	memset(buf, 'x', msg_bytes);
	fanout_self_cpu(&a);
	for (uint64_t r = 0; r < rounds; r++) {
		for (uint32_t i = 0; i < n; i++)
			if (send(fds[i], buf, msg_bytes, 0) == (ssize_t)msg_bytes)
				done++;
		if (read(ack_fd, &c, 1) != 1)
			return -1; /* the child is gone */
	}
	fanout_self_cpu(&b);
	if (done != rounds * n)
		return -1; /* a short send: the child's count no longer lines up */
	return (double)(b.user_us - a.user_us + b.sys_us - a.sys_us) / (double)done;
}

static void sort3(double r[FLOOR_ROUNDS])
{
	for (int i = 1; i < FLOOR_ROUNDS; i++)
		for (int j = i; j > 0 && r[j - 1] > r[j]; j--) {
			double t = r[j];

			r[j] = r[j - 1];
			r[j - 1] = t;
		}
}

int fanout_floor(uint32_t n, uint32_t msg_bytes, double us_per_msg[4])
{
	static const uint32_t batches[3] = { 1, 8, 32 };
	uint16_t port;
	int lfd = listen_any(&port), rc = 0, status, ack[2];
	int *fds;
	pid_t child;

	if (lfd < 0)
		return lfd;
	if (pipe(ack) != 0) {
		rc = -errno;
		close(lfd);
		return rc;
	}
	child = fork();
	if (child < 0) {
		rc = -errno;
		close(lfd);
		close(ack[0]);
		close(ack[1]);
		return rc;
	}
	if (child == 0) {
		close(ack[0]);
		signal(SIGPIPE, SIG_IGN); /* acks after the parent stopped reading */
		fcntl(ack[1], F_SETFL, O_NONBLOCK);
		_exit(drain_child(lfd, n, (uint64_t)n * msg_bytes, ack[1]));
	}
	close(ack[1]);
	close(lfd);
	fds = calloc(n, sizeof(*fds));
	if (!fds) {
		rc = -ENOMEM;
		goto out_reap;
	}
	for (uint32_t i = 0; i < n; i++) {
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(port),
					  .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		int one = 1;

		fds[i] = socket(AF_INET, SOCK_STREAM, 0);
		if (fds[i] < 0 || connect(fds[i], (struct sockaddr *)&sa, sizeof(sa)) < 0) {
			rc = -errno;
			if (fds[i] >= 0)
				close(fds[i]);
			n = i;
			goto out_close;
		}
		/* As a broker would: no Nagle delay on small writes. */
		setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	/* The median of three rounds: one round is about a second, short
	 * enough for a burst of other work on the machine to skew it. One in
	 * flight goes first: the child's count of messages lines up with the
	 * parent's only while every send so far was whole and read. */
	{
		double r[FLOOR_ROUNDS];

		for (int i = 0; i < FLOOR_ROUNDS; i++)
			r[i] = measure_in_flight(fds, n, msg_bytes, ack[0]);
		sort3(r);
		us_per_msg[3] = r[FLOOR_ROUNDS / 2];
	}
	for (int k = 0; k < 3; k++) {
		double r[FLOOR_ROUNDS];

		for (int i = 0; i < FLOOR_ROUNDS; i++)
			r[i] = measure(fds, n, msg_bytes, batches[k]);
		sort3(r);
		us_per_msg[k] = r[FLOOR_ROUNDS / 2];
	}
out_close:
	for (uint32_t i = 0; i < n; i++)
		close(fds[i]);
	free(fds);
out_reap:
	close(ack[0]);
	if (rc < 0)
		kill(child, SIGTERM);
	if (waitpid(child, &status, 0) == child && rc == 0 &&
	    (!WIFEXITED(status) || WEXITSTATUS(status) != 0))
		rc = -EIO;
	return rc;
}
