/* The broker's Prometheus text: moved out of tern dev's metrics_extra, same output. */
#include "broker_metrics.h"

#include <stdarg.h>

#include "store.h"

/* A label value as a JSON string (what tern dev wrote), which is a valid Prometheus label
 * value: backslash, quote and control characters escaped, other bytes as they are. */
static void put_label(FILE *out, const char *s, size_t n)
{
	fputc('"', out);
	for (size_t i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];
		if (ch == '"' || ch == '\\')
			fprintf(out, "\\%c", ch);
		else if (ch == '\n')
			fputs("\\n", out);
		else if (ch == '\t')
			fputs("\\t", out);
		else if (ch == '\r')
			fputs("\\r", out);
		else if (ch == '\b')
			fputs("\\b", out);
		else if (ch == '\f')
			fputs("\\f", out);
		else if (ch < 0x20)
			fprintf(out, "\\u%04x", ch);
		else
			fputc(ch, out);
	}
	fputc('"', out);
}

/* One series without labels: its HELP and TYPE lines, then NAME VALUE (fmt formats the
 * value). */
static void metric(FILE *out, const char *name, const char *type, const char *help,
		   const char *fmt, ...) __attribute__((format(printf, 5, 6)));
static void metric(FILE *out, const char *name, const char *type, const char *help,
		   const char *fmt, ...)
{
	va_list ap;
	fprintf(out, "# HELP %s %s\n# TYPE %s %s\n%s ", name, help, name, type, name);
	va_start(ap, fmt);
	vfprintf(out, fmt, ap);
	va_end(ap);
	fputc('\n', out);
}

static void queue_metric(FILE *out, const char *name, const struct broker_qinfo *q, uint64_t v)
{
	fprintf(out, "%s{queue=", name);
	put_label(out, q->name, q->name_len);
	fprintf(out, "} %llu\n", (unsigned long long)v);
}

static void queue_metrics(void *arg, const struct broker_qinfo *q)
{
	FILE *out = arg;
	queue_metric(out, "tern_queue_ready", q, q->ready);
	queue_metric(out, "tern_queue_unacked", q, q->unacked);
	queue_metric(out, "tern_queue_consumers", q, q->consumers);
	queue_metric(out, "tern_queue_delivered_total", q, q->delivered);
	queue_metric(out, "tern_queue_redelivered_total", q, q->redelivered);
	queue_metric(out, "tern_queue_dead_lettered_total", q, q->dead_lettered);
}

void broker_metrics_write(struct broker *b, FILE *out)
{
	struct store_stats ss;
	struct broker_stats bs;
	broker_store_stats(b, &ss);
	broker_get_stats(b, &bs);
	metric(out, "tern_store_batches_total", "counter", "Write transactions committed",
	       "%llu", (unsigned long long)ss.batches);
	metric(out, "tern_store_batch_messages_total", "counter",
	       "Messages written by those transactions", "%llu", (unsigned long long)ss.batch_ops);
	fputs("# HELP tern_store_commit_seconds Commit latency of one write transaction\n"
	      "# TYPE tern_store_commit_seconds histogram\n", out);
	uint64_t cum = 0;
	for (int i = 0; i < 12; i++) {
		cum += ss.commit_hist[i];
		if (i < 11)
			fprintf(out, "tern_store_commit_seconds_bucket{le=\"%g\"} %llu\n",
				store_commit_buckets_s[i], (unsigned long long)cum);
		else
			fprintf(out, "tern_store_commit_seconds_bucket{le=\"+Inf\"} %llu\n",
				(unsigned long long)cum);
	}
	fprintf(out, "tern_store_commit_seconds_sum %.6f\ntern_store_commit_seconds_count %llu\n",
		(double)ss.commit_us_sum / 1e6, (unsigned long long)ss.batches);
	metric(out, "tern_store_checkpoints_total", "counter",
	       "WAL checkpoints by the checkpointer thread", "%llu",
	       (unsigned long long)ss.checkpoints);
	metric(out, "tern_store_checkpoint_seconds_total", "counter",
	       "Time the checkpointer spent checkpointing", "%.6f",
	       (double)ss.checkpoint_us_sum / 1e6);
	metric(out, "tern_store_checkpoint_errors_total", "counter",
	       "Checkpoints that failed (not busy)", "%llu", (unsigned long long)ss.checkpoint_errors);
	metric(out, "tern_store_writer_checkpoints_total", "counter",
	       "Checkpoints the writer ran itself, the WAL having reached its bound", "%llu",
	       (unsigned long long)ss.writer_checkpoints);
	metric(out, "tern_broker_channels_active", "gauge",
	       "Channels with subscribers or writes in flight", "%llu",
	       (unsigned long long)bs.channels_active);
	metric(out, "tern_publish_errors_total", "counter", "Publishes the store could not commit",
	       "%llu", (unsigned long long)bs.publish_errors);
	fputs("# HELP tern_queue_ready Messages ready for delivery\n# TYPE tern_queue_ready gauge\n"
	      "# HELP tern_queue_unacked Deliveries awaiting ack\n# TYPE tern_queue_unacked gauge\n"
	      "# HELP tern_queue_consumers WebSocket consumers\n# TYPE tern_queue_consumers gauge\n"
	      "# HELP tern_queue_delivered_total Deliveries made\n"
	      "# TYPE tern_queue_delivered_total counter\n"
	      "# HELP tern_queue_redelivered_total Deliveries with attempt > 1\n"
	      "# TYPE tern_queue_redelivered_total counter\n"
	      "# HELP tern_queue_dead_lettered_total Messages moved to dead letters\n"
	      "# TYPE tern_queue_dead_lettered_total counter\n", out);
	broker_queue_each(b, queue_metrics, out);
}
