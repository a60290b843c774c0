"""Cluster (issue 5): failure detection between an edge and its node.

- a data-plane flood that keeps the node's CPU busy does not delay control
  heartbeats into a false failure (node_timeout_ms 600): tern_node_down_total
  stays 0 on both edges, no "down" line, no 50300; tern_node_rtt_max_seconds
  is printed;
- SIGSTOP on the node (node_timeout_ms 1000): REST and WebSocket publishes get
  50300 (retryable) within timeout + 1.5 s, then immediately; the edge's
  /healthz says 503; after SIGCONT publishes work again within a few seconds and
  a subscriber that stayed connected (never resubscribing) has every seq with
  no gap.
"""

import asyncio
import signal
import time

import clusterlib as C
import queuelib as Q
import ternlib as T
from ternlib import Client, check, check_eq

FLOOD_S = 8
FLOOD_CONNS = 24      # per edge
FLOOD_WINDOW = 16     # publishes in flight per connection
FLOOD_MAX = 400000    # per load generator


def down_lines(text, node):
    return [l for l in text.splitlines() if "node %s down" % node.addr in l]


def test_flood_does_not_cause_false_node_failure():
    # Node-heavy load: 4 durable queues bound to the flooded channels make every
    # publish 5 writes on the node and none more on the edges or the clients
    # (the Python load generators cannot otherwise outrun 2 edges on 2 cores);
    # store_sync normal keeps the node CPU-bound rather than fsync-bound.
    cfg = {"node_timeout_ms": 600, "store_sync": "normal", "queue_max_depth": 1000000}
    with C.Cluster(edges=2, config=cfg) as cl:
        node = cl.node
        prefix = Q.qname("flood")
        for j in range(4):
            Q.put_queue(cl.edges[0], "%s-copy%d" % (prefix, j), bind=["%s:*" % prefix])
        cpu0 = node.cpu_seconds()
        t0 = time.monotonic()
        gens = [C.start_flood(e.ws_url, prefix, FLOOD_S, FLOOD_CONNS, FLOOD_WINDOW, FLOOD_MAX) for e in cl.edges]
        health = {e.name: [] for e in cl.edges}
        try:
            # While the load runs: the edges' /healthz, sampled.
            for _ in range(int(FLOOD_S / 0.25) + 40):
                if all(g.poll() is not None for g in gens) or time.monotonic() - t0 > FLOOD_S + 12:
                    break
                for e in cl.edges:
                    health[e.name].append(e.health(timeout=2.0))
                time.sleep(0.25)
            results = [C.finish_flood(g, FLOOD_S + 30) for g in gens]
        finally:
            for g in gens:
                if g.poll() is None:
                    g.kill()
                    g.wait()
        elapsed = time.monotonic() - t0
        cpu = node.cpu_seconds() - cpu0
        total_ok = sum(r["ok"] for r in results)
        print("  load: %r; node CPU %.1fs over %.1fs (%.0f%% of one core), %.0f publishes/s"
              % (results, cpu, elapsed, 100.0 * cpu / elapsed, total_ok / elapsed), flush=True)
        for e in cl.edges:
            m = e.metrics()
            rtt_max = e.node_metric(m, "tern_node_rtt_max_seconds", node)
            rtt = e.node_metric(m, "tern_node_rtt_seconds", node)
            hb = e.node_metric(m, "tern_node_heartbeats_total", node)
            print("  %s: tern_node_rtt_max_seconds %r, tern_node_rtt_seconds %r, heartbeats %r"
                  % (e.name, rtt_max, rtt, hb), flush=True)
            down = e.node_metric(m, "tern_node_down_total", node)
            check(down is not None, "%s exports tern_node_down_total{node=\"%s\"}" % (e.name, node.addr),
                  sorted(k for k in m if k.startswith("tern_node")))
            check_eq(down, 0.0, "%s: tern_node_down_total during the flood" % e.name)
            check_eq(e.node_metric(m, "tern_node_up", node), 1.0, "%s: tern_node_up after the flood" % e.name)
            check(rtt_max is not None, "%s exports tern_node_rtt_max_seconds" % e.name)
            check(hb is not None and hb > 0, "%s: heartbeats counted" % e.name, hb)
            check_eq(down_lines(e.stderr(), node), [], "%s: no 'node ... down' log line" % e.name)
            bad = [h for h in health[e.name] if h != 200]
            check_eq(bad, [], "%s: /healthz stayed 200 during the flood" % e.name)
        for r in results:
            check_eq(r["errors"], {}, "no publish failed during the flood (a 50300 is a false failure)")
            check_eq((r["closed"], r["connect_failed"]), (0, 0), "no load connection lost")
            check(r["ok"] > 0, "the load published", r)


def probe_loop(edge, ch, t0, budget_s):
    """REST publishes with a short client timeout until one is answered 503
    (or budget_s). Returns [(t since t0, outcome...)]."""
    out = []
    for i in range(200):
        if time.monotonic() - t0 > budget_s:
            break
        r = C.rest_publish_probe(edge, ch, {"probe": i}, timeout=0.4)
        out.append((time.monotonic() - t0,) + r)
        if r[0] == "error":
            break
        if r[0] == "ok":
            time.sleep(0.05)
    return out


async def timed(coro):
    r = await coro
    return r, time.monotonic()


async def test_sigstop_node_detected_then_recovered_without_gap():
    timeout_s = 1.0
    cfg = {"node_timeout_ms": int(timeout_s * 1000)}
    with C.Cluster(edges=1, config=cfg) as cl:
        e = cl.edges[0]
        node = cl.node
        ch = Q.qname("stop")
        sub = await Client.connect(e.ws_url)
        await sub.subscribe(ch)
        pub = await Client.connect(e.ws_url)
        oks = []
        for i in range(10):
            oks.append((await pub.publish(ch, {"before": i}))["seq"])
        oks += [m["seq"] for m in e.publish_rest(ch, [{"data": {"before_rest": j}} for j in range(5)])]
        seqs = await C.collect_until(sub, ch, oks[-1], T.WAIT_S)
        check_eq(seqs, list(range(1, oks[-1] + 1)), "subscriber before the stop")

        t0 = time.monotonic()
        node.send_signal(signal.SIGSTOP)
        try:
            ws_task = asyncio.ensure_future(timed(pub.call("publish", timeout=15, channel=ch, data="during-stop")))
            probes = await Q.in_thread(probe_loop, e, ch, t0, timeout_s + 4)
            print("  REST probes after SIGSTOP: %r" % ([(round(p[0], 2),) + p[1:2] + (round(p[3], 2),) for p in probes],),
                  flush=True)
            check(probes and probes[-1][1] == "error", "a REST publish was answered with an error after the SIGSTOP",
                  probes[-3:])
            t_detect, _, body, _dt, status = probes[-1]
            T.check_rest_error(status, body, 50300, "REST publish while the node is stopped")
            check(t_detect <= timeout_s + 1.5,
                  "REST publish gets 50300 within node_timeout + 1.5 s of SIGSTOP (took %.2fs)" % t_detect)
            ws_reply, ws_t = await ws_task
            check_eq(ws_reply.get("op"), "error", "WS publish in flight at the SIGSTOP: error reply (%r)" % (ws_reply,))
            T.check_error(ws_reply["error"], 50300, "WS publish while the node is stopped")
            check(ws_t - t0 <= timeout_s + 1.5,
                  "WS publish gets 50300 within node_timeout + 1.5 s of SIGSTOP (took %.2fs)" % (ws_t - t0))
            # Once detected, answers come back at once.
            for i in range(5):
                r = C.rest_publish_probe(e, ch, {"after_detect": i}, timeout=2.0)
                check(r[0] == "error", "REST publish after detection is answered (not a timeout)", r)
                T.check_rest_error(r[3], r[1], 50300, "REST publish after detection")
                check(r[2] < 0.5, "REST 503 after detection comes back immediately (took %.3fs)" % r[2])
            t1 = time.monotonic()
            r = await pub.call("publish", timeout=2.0, channel=ch, data="after-detect")
            check_eq(r.get("op"), "error", "WS publish after detection: error (%r)" % (r,))
            T.check_error(r["error"], 50300, "WS publish after detection")
            check(time.monotonic() - t1 < 0.5, "WS 50300 after detection comes back immediately (took %.3fs)"
                  % (time.monotonic() - t1))
            check_eq(e.health(timeout=2.0), 503, "edge /healthz while its only node is down")
            m = e.metrics()
            check_eq(e.node_metric(m, "tern_node_up", node), 0.0, "tern_node_up while stopped")
            check(e.node_metric(m, "tern_node_down_total", node) == 1.0, "tern_node_down_total counts the failure",
                  e.node_metric(m, "tern_node_down_total", node))
            check(down_lines(e.stderr(), node), "edge logs 'tern: node %s down: <reason>'" % node.addr,
                  e.stderr()[-1500:])
        finally:
            node.send_signal(signal.SIGCONT)
        t_cont = time.monotonic()
        # Recovery: REST publish ok again within a few seconds.
        rec = None
        for i in range(200):
            if time.monotonic() - t_cont > 8:
                break
            r = C.rest_publish_probe(e, ch, {"recover": i}, timeout=1.0)
            if r[0] == "ok":
                rec = r
                oks.append(r[1])
                break
            await asyncio.sleep(0.1)
        check(rec is not None, "a REST publish succeeds within 8 s of SIGCONT")
        print("  recovered %.2fs after SIGCONT" % (time.monotonic() - t_cont), flush=True)
        check(time.monotonic() - t_cont < 5, "recovered within 5 s of SIGCONT (took %.2fs)" % (time.monotonic() - t_cont))
        e.wait_health(200, 5)
        for i in range(10):
            oks.append((await pub.publish(ch, {"after": i}))["seq"])
        oks += [m["seq"] for m in e.publish_rest(ch, [{"data": {"after_rest": j}} for j in range(5)])]
        check_eq(oks, sorted(oks), "ok'd seqs rise")
        # The subscriber never resubscribed: it has every seq from 1 to the last.
        seqs = await C.collect_until(sub, ch, oks[-1], T.WAIT_S, seqs)
        C.check_contiguous(seqs, "subscriber that stayed connected across SIGSTOP/SIGCONT", 1, oks[-1])
        check(set(oks) <= set(seqs), "every ok'd publish reached the subscriber")
        await sub.alive("subscriber after recovery")
        await sub.close()
        await pub.close()


if __name__ == "__main__":
    T.main(globals())
