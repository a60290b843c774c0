/* The broker's Prometheus text (store batches and commit latency, channels, publish errors,
 * per-queue counters), for any process that owns a broker: tern node's /metrics, tern dev's. */
#ifndef TERN_BROKER_METRICS_H
#define TERN_BROKER_METRICS_H

#include <stdio.h>

#include "broker.h"

/* Writes the broker's metrics to out (text exposition format 0.0.4). Runs on the broker's loop. */
void broker_metrics_write(struct broker *b, FILE *out);

#endif
