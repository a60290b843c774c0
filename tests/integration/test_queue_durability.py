"""Durable queues across a restart and a SIGKILL: every enqueue that got `ok`
(or 201) is there afterwards; deliveries not acked before the restart come
again (at the head, attempt + 1 after a graceful stop); acked messages do not
come back after a graceful stop; binding copies are durable before the
publisher's ok; queue configuration and bindings survive a restart; old
delivery ids are stale afterwards."""

import asyncio
import random
import time

import ternlib as T
from ternlib import check, check_eq
import queuelib as Q


async def test_graceful_restart_keeps_ready_and_returns_unacked():
    s = T.Server().start()
    try:
        q = Q.qname("restart")
        p = await Q.connect(s)
        ids = [(await p.enqueue(q, i))["id"] for i in range(60)]
        ids += [m["id"] for m in Q.enqueue_rest(s, q, [{"data": i} for i in range(60, 100)])]
        c = await Q.connect(s)
        await c.consume(q, prefetch=10)
        for _ in range(30):
            f = await c.delivery(q)
            await c.ack(q, f["delivery_id"])
        held = await c.deliveries(q, 10)
        check_eq([f["data"] for f in held], list(range(30, 40)), "held unacked")
        Q.wait_counts(s, q, (60, 10, 1))
        await p.close()
        await Q.in_thread(s.stop)  # c is still connected (and answers the 1001 close)
        s.start()
        Q.wait_counts(s, q, (70, 0, 0))
        c2 = await Q.connect(s)
        await c2.error("ack", 40400, "a delivery id from before the restart is stale", queue=q,
                       delivery_id=held[0]["delivery_id"])
        await c2.consume(q, prefetch=100)
        got = await Q.drain(c2, q)
        check_eq([(f["id"], f["data"]) for f in got], [(ids[i], i) for i in range(30, 100)],
                 "after the restart: the unacked ones first, then the rest, in order; nothing acked")
        check_eq([f["attempt"] for f in got[:10]], [2] * 10, "unacked before a graceful restart: attempt 2")
        check_eq([f["attempt"] for f in got[10:]], [1] * 60, "never delivered: attempt 1")
        Q.wait_counts(s, q, (0, 0, 1))
        await c2.close()
        s.stop()
    finally:
        s.cleanup()


async def test_restart_with_scattered_acks_keeps_order():
    """Acks scattered over the head of the queue, the rest held unacked or never
    delivered: after a graceful restart exactly the unacked messages come, in
    enqueue order (held ones attempt 2, the others 1); after a SIGKILL the same
    messages at least, still in enqueue order."""
    rng = random.Random(7)
    for how in ("sigterm", "sigkill"):
        s = T.Server().start()
        try:
            q = Q.qname("holes-" + how)
            ids = [m["id"] for m in Q.enqueue_rest(s, q, [{"data": i} for i in range(200)])]
            c = await Q.connect(s)
            await c.consume(q, prefetch=100)
            got = await c.deliveries(q, 100)
            check_eq([f["id"] for f in got], ids[:100], "first hundred in order")
            acked = set()
            for f in got:
                if rng.random() < 0.5:
                    await c.ack(q, f["delivery_id"])
                    acked.add(f["id"])
            # the acks freed slots: more deliveries come to c; wait until the
            # server's unacked count is what c holds (bounded)
            deadline = time.monotonic() + T.WAIT_S
            while True:
                await c.sync()
                holding = 100 + len(c.pending(q)) - len(acked)
                if Q.counts(s, q)[1] == holding or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            check_eq(Q.counts(s, q)[1], holding, "unacked = what the consumer holds")
            if how == "sigterm":
                await Q.in_thread(s.stop)
            else:
                s.kill()
            s.start()
            c2 = await Q.connect(s)
            await c2.consume(q, prefetch=300)
            after = await Q.drain(c2, q)
            want = [i for i in ids if i not in acked]
            got_ids = [f["id"] for f in after]
            if how == "sigterm":
                check_eq(got_ids, want, "after SIGTERM: exactly the unacked, in enqueue order")
                held = (set(f["id"] for f in got) | set(f["id"] for f in c.pending(q))) - acked
                check_eq([f["attempt"] for f in after], [2 if f["id"] in held else 1 for f in after],
                         "held ones attempt 2, never delivered attempt 1")
            else:
                check(set(want) <= set(got_ids), "after SIGKILL: every unacked message is back",
                      sorted(set(want) - set(got_ids))[:5])
                check_eq(got_ids, [i for i in ids if i in set(got_ids)], "after SIGKILL: in enqueue order")
            await c2.close()
            s.stop()
        finally:
            s.cleanup()


async def test_sigkill_loses_no_acknowledged_enqueue():
    """Producers run flat out while a consumer acks; SIGKILL lands mid-stream.
    Every message that got `ok` is there after the restart unless its ack got
    `ok` before the kill (those may come back too: at-least-once)."""
    s = T.Server().start()
    try:
        q = Q.qname("crash")
        enq = {}       # id -> data, enqueue ok
        acked = set()  # ids whose ack got ok
        ack_sent = set()  # ids whose ack was sent: the kill may land before its ok
                          # arrives but after the server settled it (then it is gone)
        stop = asyncio.Event()

        async def producer(pn):
            c = await Q.connect(s)
            n = 0
            try:
                while not stop.is_set() and n < 100000:
                    data = {"p": pn, "n": n}
                    r = await c.call("enqueue", queue=q, data=data)
                    if r.get("op") == "ok":
                        enq[r["id"]] = data
                    n += 1
            except Exception:
                pass  # killed under us

        async def consumer():
            c = await Q.connect(s)
            try:
                await c.consume(q, prefetch=20)
                while not stop.is_set():
                    f = await c.delivery(q, timeout=5)
                    ack_sent.add(f["id"])
                    r = await c.call("ack", queue=q, delivery_id=f["delivery_id"])
                    if r.get("op") == "ok":
                        acked.add(f["id"])
            except Exception:
                pass

        tasks = [asyncio.ensure_future(producer(i)) for i in range(3)] + [asyncio.ensure_future(consumer())]
        deadline = time.monotonic() + 60
        while (len(enq) < 600 or len(acked) < 100) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        check(enq and acked, "producers and the consumer made progress before the kill", len(enq), len(acked))
        s.kill()
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
        s.start()
        c = await Q.connect(s)
        await c.consume(q, prefetch=200)
        after = await Q.drain(c, q, idle_s=2.0)
        after_ids = [f["id"] for f in after]
        check_eq(len(after_ids), len(set(after_ids)), "no message delivered twice after the restart")
        after_set = set(after_ids)
        missing = [i for i in enq if i not in ack_sent and i not in after_set]
        check(not missing, "every acknowledged enqueue not yet acked survives SIGKILL (%d missing of %d)"
              % (len(missing), len(enq)), missing[:5])
        for f in after:
            if f["id"] in enq:
                check_eq(f["data"], enq[f["id"]], "data of %s after SIGKILL" % f["id"])
        back = len([i for i in after_ids if i in acked])
        # per producer, FIFO holds for what was never delivered before
        print("  %d enqueued ok, %d acked ok before SIGKILL, %d delivered after (%d of them acked before)"
              % (len(enq), len(acked), len(after), back))
        Q.wait_counts(s, q, (0, 0, 1))
        await c.close()
        s.stop()
    finally:
        s.cleanup()


async def test_sigkill_keeps_unacked_deliveries():
    s = T.Server().start()
    try:
        q = Q.qname("crash-unacked")
        r = Q.enqueue_rest(s, q, [{"data": i} for i in range(20)])
        c = await Q.connect(s)
        await c.consume(q, prefetch=5)
        held = await c.deliveries(q, 5)
        check_eq([f["data"] for f in held], list(range(5)), "held over WebSocket")
        pulled = Q.pull(s, q, max_n=5)
        check_eq([d["data"] for d in pulled], list(range(5, 10)), "pulled over REST")
        s.kill()
        s.start()
        Q.wait_counts(s, q, (20, 0, 0))
        got = Q.pull(s, q, max_n=100)
        check_eq(sorted(d["id"] for d in got), sorted(m["id"] for m in r), "all twenty after SIGKILL")
        check(all(d["attempt"] >= 1 for d in got), "attempt is at least 1 (may undercount after a crash)")
        Q.ack_rest_ok(s, q, [d["delivery_id"] for d in got])
        s.stop()
    finally:
        s.cleanup()


async def test_binding_copies_durable_across_sigkill_and_config_kept():
    s = T.Server().start()
    try:
        ns = Q.qname("crash-bind")
        qa, qb = Q.qname("cba"), Q.qname("cbb")
        cfg_a = Q.put_queue(s, qa, bind=[ns + ":*"], ack_timeout_ms=700, max_attempts=4, dead_letter=qa + "-dead")
        cfg_b = Q.put_queue(s, qb, bind=[ns + ":x"])
        p = await Q.connect(s)
        pubs = [await p.publish(ns + ":x", i, name="e") for i in range(10)]
        s.kill()  # right after the last publisher's ok
        s.start()
        check_eq(Q.put_queue(s, qa), cfg_a, "%s configuration survives SIGKILL" % qa)
        check_eq(Q.put_queue(s, qb), cfg_b, "%s configuration survives SIGKILL" % qb)
        for q in (qa, qb):
            Q.wait_counts(s, q, (10, 0, 0))
            got = Q.pull(s, q, max_n=100)
            check_eq([(d["id"], d["data"], d.get("channel"), d.get("name")) for d in got],
                     [(r["id"], i, ns + ":x", "e") for i, r in enumerate(pubs)], "copies in %s after SIGKILL" % q)
            Q.ack_rest_ok(s, q, [d["delivery_id"] for d in got])
        # the bindings still work after the restart
        p = await Q.connect(s)
        await p.publish(ns + ":y", "after")
        check_eq(Q.counts(s, qa), (1, 0, 0), "binding %s:* still in force after restart" % ns)
        check_eq(Q.counts(s, qb), (0, 0, 0), "and the exact one does not match :y")
        await p.close()
        s.stop()
        s.start()
        check_eq(Q.put_queue(s, qa), cfg_a, "configuration survives a graceful restart")
        check_eq(Q.counts(s, qa), (1, 0, 0), "the copy survives a graceful restart")
        s.stop()
    finally:
        s.cleanup()


async def test_ack_timeout_keeps_running_after_restart():
    """A restart gives unacked work back; a configured short ack timeout and
    dead-lettering keep working afterwards."""
    s = T.Server().start()
    try:
        q = Q.qname("restart-timeout")
        Q.put_queue(s, q, ack_timeout_ms=500, max_attempts=2)
        Q.enqueue_rest(s, q, {"data": "poison"})
        s.stop()
        s.start()
        c = await Q.connect(s)
        await c.consume(q, prefetch=1)
        f1 = await c.delivery(q)
        f2 = await c.delivery(q)
        check_eq((f1["attempt"], f2["attempt"]), (1, 2), "timeout redelivery after a restart")
        await Q.await_counts(s, q + ".dlq", (1, 0, 0))
        await c.close()
        s.stop()
    finally:
        s.cleanup()


async def test_enqueue_idempotency_key_survives_sigkill():
    s = T.Server().start()
    try:
        q = Q.qname("crash-idem")
        c = await Q.connect(s)
        firsts = [await c.enqueue(q, i, idempotency_key="k%d" % i) for i in range(10)]
        rest = Q.enqueue_rest(s, q, [{"data": 10, "idempotency_key": "k10"}])
        s.kill()
        s.start()
        c = await Q.connect(s)
        for i in range(10):
            r = await c.enqueue(q, i, idempotency_key="k%d" % i)
            check_eq(r["id"], firsts[i]["id"], "key k%d after SIGKILL" % i)
        again = Q.enqueue_rest(s, q, [{"data": 10, "idempotency_key": "k10"}])
        check_eq(again[0]["id"], rest[0]["id"], "REST key after SIGKILL")
        Q.wait_counts(s, q, (11, 0, 0))
        await c.close()
        s.stop()
    finally:
        s.cleanup()


async def test_sigterm_with_long_poll_and_consumer_in_flight():
    """SIGTERM while a long-poll waits and a consumer holds unacked work: the
    process still exits 0 within the stop bound, and the held work is there
    after the restart."""
    s = T.Server().start()
    try:
        q = Q.qname("term")
        idle = Q.qname("term-idle")
        Q.enqueue_rest(s, q, [{"data": i} for i in range(3)])
        c = await Q.connect(s)
        await c.consume(q, prefetch=3)
        await c.deliveries(q, 3)

        def long_poll():
            try:
                return s.http("POST", Q.qpath(idle, "/pull"), body={"wait_ms": 30000}, timeout=T.STOP_S + 10)
            except Exception as e:  # the connection may be closed on shutdown
                return ("closed", repr(e))
        fut = asyncio.ensure_future(Q.in_thread(long_poll))
        await asyncio.sleep(0.5)
        t0 = time.monotonic()
        await Q.in_thread(s.stop)  # asserts exit code 0
        took = time.monotonic() - t0
        res = await asyncio.wait_for(fut, T.WAIT_S + 30)
        # The drain answers a waiting long-poll (empty) before the connection goes.
        check(isinstance(res, tuple) and len(res) == 3, "the waiting pull got an HTTP answer", res)
        status, _, body = res
        check_eq((status, body), (200, {"deliveries": []}), "the waiting pull is answered 200, empty")
        check(took < 5, "the drain did not wait for the long-poll's 30 s (took %.1fs)" % took)
        print("  stop took %.2fs; the long-poll got %r" % (took, res[:2] if len(res) == 3 else res))
        s.start()
        Q.wait_counts(s, q, (3, 0, 0))
        got = Q.pull(s, q, max_n=10)
        check_eq([(d["data"], d["attempt"]) for d in got], [(0, 2), (1, 2), (2, 2)],
                 "held deliveries back after the restart, attempt 2")
        Q.ack_rest_ok(s, q, [d["delivery_id"] for d in got])
        s.stop()
    finally:
        s.cleanup()


if __name__ == "__main__":
    T.main(globals())
