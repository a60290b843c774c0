"""Cluster (issue 5): clients on two edges linked to one node.

- channel messages cross edges (WS subscribe on B, publish on A over WS and REST):
  every seq once, in order, same data;
- queue work crosses edges: enqueue on A, consume + ack on B; nack / redelivery
  and a consumer gone on one edge redeliver on the other; REST pull on A of work
  enqueued on B, acked over REST on B;
- trace ids: with log_calls all, one REST publish shows the same trace id on a
  DataPlane/Publish line in the edge's stderr and in the node's stderr.
"""

import asyncio
import re
import time

import clusterlib as C
import queuelib as Q
import ternlib as T
from ternlib import Client, check, check_eq


def name(prefix):
    return Q.qname(prefix)


async def test_channel_messages_cross_edges():
    with C.Cluster(edges=2) as cl:
        a, b = cl.edges
        ch = name("xedge")
        sub_b = await Client.connect(b.ws_url)
        sub_a = await Client.connect(a.ws_url)
        r = await sub_b.subscribe(ch)
        check_eq(r.get("seq"), 0, "subscribe ok on a new channel: last seq 0 (reply %r)" % (r,))
        await sub_a.subscribe(ch)
        pub_a = await Client.connect(a.ws_url)
        pub_b = await Client.connect(b.ws_url)
        sent = []  # (seq, data) in publish order
        for i in range(40):
            p = await pub_a.publish(ch, {"ws_a": i})
            sent.append((p["seq"], {"ws_a": i}))
        for batch in range(4):
            msgs = [{"data": {"rest_a": batch * 10 + j}} for j in range(10)]
            got = a.publish_rest(ch, msgs)
            check_eq(len(got), 10, "one result per REST message")
            for m, g in zip(msgs, got):
                sent.append((g["seq"], m["data"]))
        for i in range(20):
            p = await pub_b.publish(ch, {"ws_b": i})
            sent.append((p["seq"], {"ws_b": i}))
        n = len(sent)
        check_eq([s for s, _ in sent], list(range(1, n + 1)),
                 "publish replies on both edges carry seqs 1..N in publish order")
        for who, c in (("subscriber on edge B", sub_b), ("subscriber on edge A", sub_a)):
            got = await c.messages(ch, n, timeout=T.WAIT_S)
            C.check_contiguous([m["seq"] for m in got], who, 1, n)
            check_eq([m["data"] for m in got], [d for _, d in sent], who + ": data in seq order")
            for m in got:
                T.check_message_obj(m, ch, who)
            await c.sync()
            extra = [f for f in c.backlog if f.get("op") == "message"]
            check_eq(extra, [], who + ": no message beyond the N published (no duplicate)")
        # History through either edge is the same N messages.
        for e in (a, b):
            h = e.full_history(ch)
            check_eq([m["seq"] for m in h], list(range(1, n + 1)), "%s history seqs" % e.name)
        status, _, info = b.http("GET", "/v1/channels/%s" % T.quote(ch))
        check_eq(status, 200, "GET channel on edge B")
        check_eq(info.get("last_seq"), n, "last_seq seen through edge B (info %r)" % (info,))
        for c in (sub_a, sub_b, pub_a, pub_b):
            await c.close()


async def test_subscribe_again_after_edge_last_unsubscribe():
    """When the last subscriber of a channel on an edge leaves (unsubscribe or
    disconnect), a later subscribe to it on that edge works and gets what is
    published after it (and, with rewind, the history)."""
    with C.Cluster(edges=2) as cl:
        a, b = cl.edges
        ch = name("resub")
        c = await Client.connect(a.ws_url)
        await c.subscribe(ch)
        b.publish_rest(ch, {"data": 1})
        check_eq((await c.message(ch))["seq"], 1, "first subscription gets seq 1")
        await c.ok("unsubscribe", channel=ch)
        b.publish_rest(ch, {"data": 2})
        last = 2  # the data of the newest message: what rewind=1 returns
        for what, conn in (("same connection", c), ("another connection", await Client.connect(a.ws_url))):
            r = await conn.call("subscribe", timeout=5, channel=ch, rewind=1)
            check_eq(r.get("op"), "ok", "subscribe again on edge A after its last subscriber left (%s): %r"
                     % (what, r))
            m = await conn.message(ch, timeout=5)
            check_eq((m["seq"], m["data"]), (r["seq"], last), "rewind=1 after resubscribing (%s)" % what)
            seq = b.publish_rest(ch, {"data": "live"})[0]["seq"]
            last = "live"
            m = await conn.message(ch, timeout=5)
            check_eq((m["seq"], m["data"]), (seq, "live"), "live message after resubscribing (%s)" % what)
            await conn.ok("unsubscribe", channel=ch)
        # Disconnecting the last subscriber, then subscribing again.
        d = await Client.connect(a.ws_url)
        await d.subscribe(ch)
        await d.close()
        await asyncio.sleep(0.2)
        e = await Client.connect(a.ws_url)
        r = await e.call("subscribe", timeout=5, channel=ch)
        check_eq(r.get("op"), "ok", "subscribe on edge A after its last subscriber disconnected: %r" % (r,))
        await c.close()
        await e.close()


async def test_queue_work_crosses_edges():
    with C.Cluster(edges=2) as cl:
        a, b = cl.edges
        q = name("xq")
        prod = await Q.connect(a.ws_url)
        ids = []
        for i in range(12):
            ids.append((await prod.enqueue(q, {"job": i}))["id"])
        cons = await Q.connect(b.ws_url)
        await cons.consume(q, prefetch=5)
        got = []
        for _ in range(12):
            d = await cons.delivery(q)
            Q.check_delivery(d, q, "delivery on edge B", attempt=1)
            got.append(d)
            await cons.ack(q, d["delivery_id"])
        check_eq([d["id"] for d in got], ids, "edge B's consumer gets A's enqueued messages, FIFO")
        check_eq([d["data"] for d in got], [{"job": i} for i in range(12)], "data of each delivery")
        check_eq(await cons.quiet(q), [], "nothing delivered twice")
        for e in (a, b):
            body = Q.info(e, q)
            check_eq((body["ready"], body["unacked"], body["consumers"]), (0, 0, 1),
                     "queue counts through %s after every ack (body %r)" % (e.name, body))
        # Queue metric on the node (the node owns the queue).
        m = cl.node.metrics()
        check_eq(Q.queue_metric(m, "tern_queue_ready", q), 0.0, "node's tern_queue_ready for the queue")
        await prod.close()
        await cons.close()


async def test_nack_and_consumer_loss_redeliver_across_edges():
    with C.Cluster(edges=2) as cl:
        a, b = cl.edges
        q = name("xnack")
        cons_b = await Q.connect(b.ws_url)
        await cons_b.consume(q, prefetch=1)
        prod = await Q.connect(a.ws_url)
        mid = (await prod.enqueue(q, {"n": 1}))["id"]
        d1 = await cons_b.delivery(q)
        Q.check_delivery(d1, q, "first delivery on B", attempt=1, data={"n": 1})
        check_eq(d1["id"], mid, "delivered id is the enqueued id")
        await cons_b.nack(q, d1["delivery_id"])
        d2 = await cons_b.delivery(q)
        Q.check_delivery(d2, q, "redelivery after nack", attempt=2)
        check_eq(d2["id"], mid, "same message after nack")
        # A consumer on edge A; B's connection goes away holding attempt 2.
        cons_a = await Q.connect(a.ws_url)
        await cons_a.consume(q, prefetch=1)
        await cons_b.close()
        d3 = await cons_a.delivery(q)
        Q.check_delivery(d3, q, "redelivery on edge A after B's consumer left", attempt=3)
        check_eq(d3["id"], mid, "same message on edge A")
        # The stale delivery id of B's attempt is 40400 (through edge A).
        await cons_a.error("ack", 40400, "ack of a stale delivery id from the other edge",
                           queue=q, delivery_id=d2["delivery_id"])
        await cons_a.ack(q, d3["delivery_id"])
        check_eq(await cons_a.quiet(q), [], "nothing after the ack")
        await Q.await_counts(a, q, (0, 0, 1))
        await cons_a.close()
        await prod.close()


def test_rest_pull_on_a_of_work_enqueued_on_b():
    with C.Cluster(edges=2) as cl:
        a, b = cl.edges
        q = name("xpull")
        enq = Q.enqueue_rest(b, q, [{"data": {"k": i}} for i in range(5)])
        ds = Q.pull(a, q, max_n=5, wait_ms=2000)
        check_eq([d["id"] for d in ds], [m["id"] for m in enq], "edge A pulls B's enqueued messages, FIFO")
        check_eq([d["data"] for d in ds], [{"k": i} for i in range(5)], "pulled data")
        Q.wait_counts(b, q, (0, 5, 0))
        # Delivery ids pulled on A are valid on B.
        Q.ack_rest_ok(b, q, [d["delivery_id"] for d in ds])
        Q.wait_counts(a, q, (0, 0, 0))
        status, _, body = Q.ack_rest(a, q, [ds[0]["delivery_id"]])
        T.check_rest_error(status, body, 40400, "acking an already acked id on the other edge")
        # A long poll on A is answered by an enqueue on B.
        t0 = time.monotonic()
        import threading
        res = {}
        th = threading.Thread(target=lambda: res.update(d=Q.pull(a, q, max_n=1, wait_ms=8000)))
        th.start()
        time.sleep(0.5)
        Q.enqueue_rest(b, q, {"data": "late"})
        th.join(15)
        check("d" in res, "long poll on A answered", res)
        check_eq([d["data"] for d in res["d"]], ["late"], "long poll on A gets B's enqueue")
        check(time.monotonic() - t0 < 6, "long poll answered as soon as B enqueued, not after wait_ms",
              time.monotonic() - t0)
        Q.ack_rest_ok(a, q, [res["d"][0]["delivery_id"]])


def test_node_and_edge_ops_endpoints():
    with C.Cluster(edges=1) as cl:
        e = cl.edges[0]
        node = cl.node
        check("node n1" in node.stderr(), "the node's start line names it ('node <id>')", node.stderr()[-500:])
        C.wait_until(lambda: ("node %s up" % node.addr) in e.stderr(), 5,
                     "the edge's 'tern: node %s up' line" % node.addr)
        check_eq(node.health(), 200, "node /healthz")
        st, _, body = node.http("GET", "/healthz")
        check_eq((st, body.strip() if isinstance(body, str) else body), (200, "ok"), "node /healthz body")
        ch = name("ops")
        n = 7
        for i in range(n):
            e.publish_rest(ch, {"data": i})
        m = node.metrics()
        check_eq((m.get('tern_node_links{plane="control"}'), m.get('tern_node_links{plane="data"}')),
                 (1.0, 2.0), "node's tern_node_links with one edge, default K=2")
        check(T.metric(m, "tern_store_batches_total") >= 1, "node exports the broker's tern_store_batches_total",
              sorted(k for k in m if k.startswith("tern_store")))
        key = 'tern_link_calls_total{side="server",method="tern.data.DataPlane/Publish",code="OK"}'
        if key in m:
            check(m[key] >= n, "node counts the Publish calls it served (%s)" % key, m[key])
        else:
            print("  note: %s absent from the node's /metrics (soft check); link call metrics: %r"
                  % (key, sorted(k for k in m if k.startswith("tern_link_calls_total"))[:10]), flush=True)
        em = e.metrics()
        check_eq(e.node_metric(em, "tern_node_up", node), 1.0, "edge's tern_node_up{node=...}")
        check_eq(e.node_metric(em, "tern_node_down_total", node), 0.0, "edge's tern_node_down_total{node=...}")
        for k in ("tern_node_rtt_seconds", "tern_node_rtt_max_seconds", "tern_node_heartbeats_total"):
            check(e.node_metric(em, k, node) is not None, "edge exports %s{node=\"%s\"}" % (k, node.addr),
                  sorted(x for x in em if x.startswith("tern_node")))


def test_edge_without_node_unhealthy_until_node_starts():
    node = C.Node("n1")
    e = C.Edge("edgeA", [node])
    try:
        e.start(wait=False)
        e.wait_health(503, 10)
        st, _, body = e.http("POST", "/v1/channels/nonode/messages", body={"data": 1}, timeout=10)
        T.check_rest_error(st, body, 50300, "publish on an edge whose node is not up")
        node.start()
        t0 = time.monotonic()
        e.wait_health(200, 10)
        print("  edge healthy %.2fs after its node started" % (time.monotonic() - t0), flush=True)
        # Contract: /healthz 200 means "this process can serve requests".
        st, _, body = e.http("POST", "/v1/channels/nonode/messages", body={"data": 2})
        check_eq(st, 201, "publish right after the edge's /healthz turned 200 (body %r)" % (body,))
        check_eq(body["messages"][0]["seq"], 1, "publish once the node is up")
        e.stop()
        node.stop()
    finally:
        e.cleanup()
        node.cleanup()


TRACE_RE = re.compile(r"link call (client|server) (\S+) (\S+) .*?trace=([0-9A-Za-z_-]+)")


def publish_lines(text, side):
    return [m for m in TRACE_RE.finditer(text)
            if m.group(1) == side and m.group(2).endswith("DataPlane/Publish")]


def test_trace_id_in_edge_and_node_logs():
    cfg = {"log_calls": "all"}
    with C.Cluster(edges=1, config=cfg) as cl:
        e = cl.edges[0]
        ch = name("trace")
        time.sleep(0.3)
        before_e = len(publish_lines(e.stderr(), "client"))
        before_n = len(publish_lines(cl.node.stderr(), "server"))
        e.publish_rest(ch, {"data": {"trace": 1}})
        # Log lines may be flushed a moment later.
        C.wait_until(lambda: len(publish_lines(e.stderr(), "client")) > before_e, 5,
                     "a 'link call client ...DataPlane/Publish' line in the edge's stderr")
        C.wait_until(lambda: len(publish_lines(cl.node.stderr(), "server")) > before_n, 5,
                     "a 'link call server ...DataPlane/Publish' line in the node's stderr")
        el = publish_lines(e.stderr(), "client")[before_e:]
        nl = publish_lines(cl.node.stderr(), "server")[before_n:]
        check_eq(len(el), 1, "one Publish call logged on the edge for one REST publish",
                 [m.group(0) for m in el])
        check_eq(len(nl), 1, "one Publish call logged on the node", [m.group(0) for m in nl])
        check_eq(el[0].group(3), "OK", "edge's Publish line says OK", el[0].group(0))
        check_eq(nl[0].group(3), "OK", "node's Publish line says OK", nl[0].group(0))
        check_eq(nl[0].group(4), el[0].group(4), "same trace id on the edge's and the node's line",
                 el[0].group(0), nl[0].group(0))
        print("  edge: %s\n  node: %s" % (el[0].group(0), nl[0].group(0)), flush=True)


if __name__ == "__main__":
    T.main(globals())
