"""Cluster (issue 5): a node restart and an edge crash, seen by clients.

- node restart (SIGTERM, then started again on the same port and data dir;
  and a SIGKILL variant): subscribers on both edges stay connected, never
  resubscribe, and get every seq once with no gap (some published before, some
  after);
- a consumer keeps getting deliveries after a node restart without sending
  consume again, and a delivery it held unacked is delivered again (expected
  behaviour: the edge restores consumers; the lead implements it);
- SIGKILL of one edge harms no client of another edge: they keep publishing
  and receiving without an error, the node stays healthy and its link sockets
  drop to the remaining edge's 1 + K.
"""

import asyncio
import signal
import time

import clusterlib as C
import queuelib as Q
import ternlib as T
from ternlib import Client, check, check_eq

K = 2


async def publish_retrying(c, ch, data, budget_s=5.0):
    """WS publish; retries 50300 (retryable) for up to budget_s, fails on anything else."""
    deadline = time.monotonic() + budget_s
    for _ in range(1000):
        r = await c.call("publish", channel=ch, data=data)
        if r.get("op") == "ok":
            return r
        T.check_error(r.get("error"), 50300, "publish right after the node came back")
        check(time.monotonic() < deadline, "publish still 50300 %.1fs after the edge was healthy again" % budget_s, r)
        await asyncio.sleep(0.1)
    raise T.TestFailure("publish never succeeded")


def errors_in(c):
    return [f for f in c.backlog if f.get("op") == "error"]


async def node_restart_keeps_subscribers(stop):
    with C.Cluster(edges=2, links=K) as cl:
        a, b = cl.edges
        node = cl.node
        ch = Q.qname("restart")
        subs = [await Client.connect(a.ws_url), await Client.connect(b.ws_url)]
        for s in subs:
            r = await s.subscribe(ch)
            check_eq(r.get("seq"), 0, "subscribe on a new channel")
        pub_a = await Client.connect(a.ws_url)
        last = 0
        for i in range(15):
            last = (await pub_a.publish(ch, {"before": i}))["seq"]
        last = b.publish_rest(ch, [{"data": {"before_rest": j}} for j in range(5)])[-1]["seq"]
        seqs = []
        for s in subs:
            got = await C.collect_until(s, ch, last, T.WAIT_S)
            check_eq(got, list(range(1, last + 1)), "subscriber before the restart")
            seqs.append(got)

        stop(node)
        # Both edges notice the node is gone (goaway on SIGTERM, a closed link on SIGKILL).
        for e in (a, b):
            e.wait_health(503, 5)
        for e in (a, b):
            lines = [l for l in e.stderr().splitlines() if ("node %s down:" % node.addr) in l]
            check(lines and lines[-1].split("down:", 1)[1].strip(),
                  "%s logs 'tern: node %s down: <reason>'" % (e.name, node.addr), e.stderr()[-1000:])
        n_up = [e.stderr().count("node %s up" % node.addr) for e in (a, b)]
        node.start()
        t_up = time.monotonic()
        for e in (a, b):
            e.wait_health(200, 10)
        for e, n in zip((a, b), n_up):
            C.wait_until(lambda: e.stderr().count("node %s up" % node.addr) > n, 5,
                         "%s logs 'tern: node %s up' again" % (e.name, node.addr))
        print("  edges healthy %.2fs after the node answered /healthz" % (time.monotonic() - t_up), flush=True)
        r = await publish_retrying(pub_a, ch, {"after": 0})
        check_eq(r["seq"], last + 1, "first seq after the restart continues the channel")
        last = r["seq"]
        for i in range(1, 15):
            last = (await pub_a.publish(ch, {"after": i}))["seq"]
        last = b.publish_rest(ch, [{"data": {"after_rest": j}} for j in range(5)])[-1]["seq"]
        for s, got, e in zip(subs, seqs, (a, b)):
            got = await C.collect_until(s, ch, last, T.WAIT_S, got)
            C.check_contiguous(got, "subscriber on %s across the node restart (never resubscribed)" % e.name,
                               1, last)
            await s.sync()
            check_eq(errors_in(s), [], "no error frame to the subscriber on %s" % e.name)
            extra = [f for f in s.backlog if f.get("op") == "message"]
            check_eq(extra, [], "no message after the last (no duplicate) on %s" % e.name)
            await s.alive("subscriber on %s" % e.name)
        for c in subs + [pub_a]:
            await c.close()


async def test_node_sigterm_restart_keeps_subscribers():
    await node_restart_keeps_subscribers(lambda n: n.stop(signal.SIGTERM))


async def test_node_sigkill_restart_keeps_subscribers():
    await node_restart_keeps_subscribers(lambda n: n.kill())


async def test_consumer_keeps_consuming_across_node_restart():
    """Expected behaviour (the edge restores its consumers on the node after a
    restart); the lead implements consumer restore."""
    with C.Cluster(edges=2, links=K) as cl:
        a, b = cl.edges
        node = cl.node
        q = Q.qname("restartq")
        cons = await Q.connect(a.ws_url)
        await cons.consume(q, prefetch=10)
        for i in range(5):
            Q.enqueue_rest(b, q, {"data": {"before": i}})
        ds = await cons.deliveries(q, 5)
        check_eq([d["data"] for d in ds], [{"before": i} for i in range(5)], "deliveries before the restart")
        for d in ds[:4]:
            await cons.ack(q, d["delivery_id"])
        held = ds[4]  # not acked across the restart
        node.stop(signal.SIGTERM)
        a.wait_health(503, 5)
        node.start()
        a.wait_health(200, 10)
        b.wait_health(200, 10)
        deadline = time.monotonic() + 5
        for i in range(100):
            st, _, body = b.http("POST", Q.qpath(q, "/messages"), body={"data": {"after": 0}})
            if st == 201:
                break
            T.check_rest_error(st, body, 50300, "enqueue right after the node came back")
            check(time.monotonic() < deadline, "enqueue still 50300 5 s after the edge was healthy", body)
            time.sleep(0.1)
        for i in range(1, 5):
            Q.enqueue_rest(b, q, {"data": {"after": i}})
        got = []
        redelivered = None
        for _ in range(6):
            d = await cons.delivery(q, timeout=T.WAIT_S)
            if d["id"] == held["id"]:
                redelivered = d
            else:
                got.append(d)
            await cons.ack(q, d["delivery_id"])
        check(redelivered is not None, "the delivery held unacked across the restart is delivered again")
        check_eq(redelivered["attempt"], 2, "its attempt after the restart (frame %r)" % (redelivered,))
        check_eq([d["data"] for d in got], [{"after": i} for i in range(5)],
                 "the consumer gets the work enqueued after the restart without sending consume again")
        check_eq(await cons.quiet(q), [], "nothing more")
        await cons.close()


async def test_edge_sigkill_harms_no_other_edge():
    with C.Cluster(edges=2, links=K) as cl:
        a, b = cl.edges
        node = cl.node
        ch = Q.qname("ekill")
        sub_a = await Client.connect(a.ws_url)
        sub_b = await Client.connect(b.ws_url)
        await sub_a.subscribe(ch)
        await sub_b.subscribe(ch)
        pub_a = await Client.connect(a.ws_url)
        pub_b = await Client.connect(b.ws_url)
        oks_b = []
        oks_a = []
        stop = asyncio.Event()

        async def run_b():
            for i in range(100000):
                if stop.is_set():
                    break
                r = await pub_b.call("publish", channel=ch, data={"b": i})
                check_eq(r.get("op"), "ok", "publish on edge B while edge A dies (reply %r)" % (r,))
                oks_b.append(r["seq"])
                await asyncio.sleep(0.01)

        async def run_a():
            try:
                for i in range(100000):
                    if stop.is_set():
                        break
                    r = await pub_a.call("publish", channel=ch, data={"a": i})
                    if r.get("op") == "ok":
                        oks_a.append(r["seq"])
                    await asyncio.sleep(0.01)
            except Exception:
                pass  # edge A is killed under it

        tb = asyncio.ensure_future(run_b())
        ta = asyncio.ensure_future(run_a())
        await asyncio.sleep(1.0)
        a.kill()
        check_eq(a.last_rc, -signal.SIGKILL, "edge A died of SIGKILL")
        n_b_at_kill = len(oks_b)
        await asyncio.sleep(1.5)
        stop.set()
        await asyncio.wait_for(tb, T.WAIT_S)
        await asyncio.wait_for(ta, T.WAIT_S)
        check(len(oks_b) > n_b_at_kill + 10, "edge B's publisher kept publishing after A died",
              n_b_at_kill, len(oks_b))
        last = max(oks_b + oks_a)
        got = await C.collect_until(sub_b, ch, last, T.WAIT_S)
        await sub_b.sync()
        got += [f["seq"] for f in sub_b.backlog if f.get("op") == "message" and f.get("channel") == ch]
        sub_b.backlog = [f for f in sub_b.backlog if f.get("op") != "message"]
        C.check_contiguous(got, "subscriber on edge B while edge A was killed", 1)
        check(set(oks_b) <= set(got), "every ok'd publish of B reached B's subscriber")
        check(set(oks_a) <= set(got), "every ok'd publish of A reached B's subscriber")
        check_eq(errors_in(sub_b) + errors_in(pub_b), [], "no error frame to edge B's clients")
        await sub_b.alive("edge B subscriber")
        check_eq(node.health(timeout=2.0), 200, "node /healthz after edge A died")
        check_eq(b.health(timeout=2.0), 200, "edge B /healthz after edge A died")
        total, listening, _ = C.wait_sockets(node, (1 + K) + 1)
        print("  node sockets after edge A died: %d (%d listening)" % (total, listening), flush=True)
        check_eq((total - listening, listening), (1 + K, 1),
                 "node's (link sockets, listeners) after edge A died: edge B's 1 + K only")
        m = b.metrics()
        check_eq(b.node_metric(m, "tern_node_down_total", node), 0.0, "edge B never saw the node down")
        for c in (sub_b, pub_b):
            await c.close()
        for c in (sub_a, pub_a):
            c.ws.transport.abort()  # their edge is gone: no close handshake to wait for


if __name__ == "__main__":
    T.main(globals())
