"""Queues under churn: producers, and consumers that ack, nack, let deliveries
time out, disconnect and come back, all at once. Whatever happens, every
message is acked successfully exactly once, no (message, attempt) is ever
delivered twice (one consumer at a time), stale acks get 40400 and nothing
else fails; and binding copies made by concurrent publishers all survive a
SIGKILL, one per queue per message."""

import asyncio
import random
import time

import ternlib as T
from ternlib import check, check_eq
import queuelib as Q


async def test_churn_every_message_acked_exactly_once():
    with T.Server() as s:
        q = Q.qname("churn")
        Q.put_queue(s, q, ack_timeout_ms=1500, max_attempts=1000)
        n_msgs = 600
        rng = random.Random(4)
        enq = {}
        acked_ok = {}          # id -> times an ack got ok
        seen = set()           # (id, attempt)
        dup_attempts = []
        other_errors = []
        stale = [0]
        deliveries = [0]
        done = asyncio.Event()

        async def producer(pn):
            c = await Q.connect(s)
            for i in range(pn, n_msgs, 2):
                r = await c.enqueue(q, i)
                enq[r["id"]] = i
            await c.close()

        def note(f):
            deliveries[0] += 1
            key = (f["id"], f["attempt"])
            if key in seen:
                dup_attempts.append(key)
            seen.add(key)

        async def settle(c, f, verb, **kw):
            r = await c.call(verb, queue=q, delivery_id=f["delivery_id"], **kw)
            if r.get("op") == "ok":
                if verb == "ack":
                    acked_ok[f["id"]] = acked_ok.get(f["id"], 0) + 1
                    if len(acked_ok) >= n_msgs:
                        done.set()
            elif r.get("op") == "error" and r["error"].get("code") == 40400:
                stale[0] += 1  # it timed out just before: fine
            else:
                other_errors.append(r)

        async def consumer(kind):
            # kind 0: acks; 1: nacks 20 %; 2: disconnects every ~25; 3: ignores 5 %
            deadline = time.monotonic() + 150
            while not done.is_set() and time.monotonic() < deadline:
                c = await Q.connect(s)
                await c.consume(q, prefetch=rng.choice([1, 5, 20]))
                budget = rng.randint(15, 35) if kind == 2 else 10 ** 9
                try:
                    while not done.is_set() and budget > 0 and time.monotonic() < deadline:
                        try:
                            f = await c.delivery(q, timeout=0.5)
                        except T.TestFailure:
                            continue
                        note(f)
                        budget -= 1
                        roll = rng.random()
                        if kind == 1 and roll < 0.2:
                            await settle(c, f, "nack")
                        elif kind == 3 and roll < 0.05:
                            pass  # let it time out
                        elif kind == 2 and budget == 0:
                            pass  # hold it: the disconnect gives it back
                        else:
                            await settle(c, f, "ack")
                finally:
                    await c.close()

        tasks = [asyncio.ensure_future(consumer(k)) for k in range(4)]
        await asyncio.gather(*[producer(p) for p in range(2)])
        try:
            await asyncio.wait_for(done.wait(), 160)
        except asyncio.TimeoutError:
            pass
        done.set()
        await asyncio.gather(*tasks)
        print("  %d deliveries for %d messages, %d stale acks" % (deliveries[0], n_msgs, stale[0]))
        check_eq(len(enq), n_msgs, "every enqueue got ok")
        check(not other_errors, "only 40400 for stale acks", other_errors[:3])
        check(not dup_attempts, "no (message, attempt) delivered twice", dup_attempts[:5])
        twice = {i: n for i, n in acked_ok.items() if n != 1}
        check(not twice, "no message acked successfully twice", list(twice.items())[:5])
        missing = [i for i in enq if i not in acked_ok]
        check(not missing, "every message acked (%d missing)" % len(missing), missing[:5])
        check(set(acked_ok) <= set(enq), "only enqueued messages were delivered")
        await Q.await_counts(s, q, (0, 0, 0))
        check_eq(Q.counts(s, q + ".dlq"), (0, 0, 0), "nothing dead-lettered")


async def test_concurrent_publishers_copies_survive_sigkill():
    s = T.Server().start()
    try:
        ns = Q.qname("cc")
        qa, qb = Q.qname("cca"), Q.qname("ccb")
        Q.put_queue(s, qa, bind=[ns + ":*"])
        Q.put_queue(s, qb, bind=[ns + ":even", ns + ":odd"])
        published = {}  # id -> channel
        stop = asyncio.Event()

        async def publisher(pn):
            c = await Q.connect(s)
            n = 0
            try:
                while not stop.is_set() and n < 100000:
                    ch = ns + (":even" if n % 2 == 0 else ":odd")
                    r = await c.call("publish", channel=ch, data={"p": pn, "n": n})
                    if r.get("op") == "ok":
                        published[r["id"]] = ch
                    n += 1
            except Exception:
                pass

        def rest_publisher():
            n = 0
            while not stop.is_set() and n < 10000:
                try:
                    status, _, body = s.http("POST", "/v1/channels/%s/messages" % T.quote(ns + ":even"),
                                             body=[{"data": {"rest": n, "k": k}} for k in range(10)], timeout=5)
                except Exception:
                    return
                if status == 201:
                    for m in body["messages"]:
                        published[m["id"]] = ns + ":even"
                n += 1

        tasks = [asyncio.ensure_future(publisher(p)) for p in range(2)]
        rest = asyncio.ensure_future(Q.in_thread(rest_publisher))
        deadline = time.monotonic() + 60
        while len(published) < 500 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        s.kill()
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, rest, return_exceptions=True), 60)
        check(published, "publishers made progress")
        s.start()
        for q in (qa, qb):
            got = []
            for _ in range(1000):
                batch = Q.pull(s, q, max_n=1000)
                if not batch:
                    break
                got += batch
                Q.ack_rest_ok(s, q, [d["delivery_id"] for d in batch])
            ids = [d["id"] for d in got]
            check_eq(len(ids), len(set(ids)), "%s: one copy per message" % q)
            missing = [i for i in published if i not in set(ids)]
            check(not missing, "%s: a copy of every message whose publish got ok (%d of %d missing)"
                  % (q, len(missing), len(published)), missing[:5])
            for d in got:
                if d["id"] in published:
                    check_eq(d.get("channel"), published[d["id"]], "copy carries its channel")
        print("  %d publishes acknowledged before SIGKILL, all copied into both queues" % len(published))
        s.stop()
    finally:
        s.cleanup()


if __name__ == "__main__":
    T.main(globals())
