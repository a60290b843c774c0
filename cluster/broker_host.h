/* A broker on a loop, as every process that owns one runs it (tern node, tern dev): the
 * store thread wakes the loop through an async handle (broker_poll), and a timer drives queue
 * ack timeouts and pull waits (broker_tick). */
#ifndef TERN_BROKER_HOST_H
#define TERN_BROKER_HOST_H

#include <stddef.h>
#include <uv.h>

#include "broker.h"
#include "config.h"

struct broker_host {
	uv_async_t wake;
	uv_timer_t tick;
	struct broker *broker;
};

/* Opens the broker of cfg (data dir, limits, retention) on loop. Returns 0, or -1 with one
 * line in why; then nothing is left open. */
int broker_host_open(struct broker_host *h, uv_loop_t *loop, const struct tern_config *cfg,
		     char *why, size_t why_len);

/* Closes the broker (commits what is queued, answers every publisher) and the handles; h may
 * be freed once the loop ran. */
void broker_host_close(struct broker_host *h);

#endif
