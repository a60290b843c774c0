#include "broker_host.h"

#include "tern_limits.h"

static void on_wake(uv_async_t *a)
{
	struct broker_host *h = a->data;
	broker_poll(h->broker);
}

static void notify(void *arg) { uv_async_send(arg); }

static void on_tick(uv_timer_t *t)
{
	struct broker_host *h = t->data;
	broker_tick(h->broker);
	broker_poll(h->broker);
}

int broker_host_open(struct broker_host *h, uv_loop_t *loop, const struct tern_config *cfg,
		     char *why, size_t why_len)
{
	uv_async_init(loop, &h->wake, on_wake);
	h->wake.data = h;
	struct broker_config bc = {
		.data_dir = cfg->data_dir,
		.sync_full = cfg->store_sync_full,
		.max_message_bytes = cfg->max_message_bytes,
		.history_messages = (uint32_t)cfg->history_max_messages,
		.history_age_ms = cfg->history_max_age_s * 1000,
		.idem_window_ms = cfg->idempotency_window_s * 1000,
		.sweep_interval_ms = cfg->store_sweep_interval_ms,
		.notify = notify,
		.notify_arg = &h->wake,
		.queue_max_depth = cfg->queue_max_depth,
	};
	if (broker_open(&h->broker, &bc, why, why_len) != 0) {
		uv_close((uv_handle_t *)&h->wake, NULL);
		return -1;
	}
	uv_timer_init(loop, &h->tick);
	h->tick.data = h;
	uv_timer_start(&h->tick, on_tick, TERN_QUEUE_TICK_MS, TERN_QUEUE_TICK_MS);
	return 0;
}

void broker_host_close(struct broker_host *h)
{
	uv_close((uv_handle_t *)&h->tick, NULL);
	broker_close(h->broker);
	h->broker = NULL;
	uv_close((uv_handle_t *)&h->wake, NULL);
}
