"""Bad input and limits on the queue ops over WebSocket: unknown delivery id,
ack twice, ack after nack, bad queue names (40001), wrong types and missing
fields (40000), prefetch outside 1-1000 (40000), messages over the size limit
(41300), the queue depth limit (queue_max_depth: 42900, retryable); every
error has the contract's shape, carries the ref, keeps the connection open
and leaves other clients alone."""

import base64
import time

import ternlib as T
from ternlib import check, check_eq
import queuelib as Q

SHARED = T.Shared()


def server():
    return SHARED.get()


class Bystander:
    """A consumer on another connection that must keep getting its work."""

    def __init__(self, s):
        self.s = s
        self.q = Q.qname("bystander")
        self.n = 0

    async def start(self):
        self.c = await Q.connect(self.s)
        await self.c.consume(self.q)

    async def still_fine(self, what):
        await self.c.enqueue(self.q, self.n)
        f = await self.c.delivery(self.q)
        check_eq(f["data"], self.n, "another client unaffected (%s)" % what)
        await self.c.ack(self.q, f["delivery_id"])
        self.n += 1

    async def close(self):
        await self.c.close()


async def test_unknown_and_stale_delivery_ids():
    s = server()
    b = Bystander(s)
    await b.start()
    q = Q.qname("ids")
    c = await Q.connect(s)
    for op in ("ack", "nack"):
        for bogus in ("no-such-id", "0", "x" * 300, "ünï"):
            r = await c.error(op, 40400, "%s of unknown id %r" % (op, bogus), queue=q, delivery_id=bogus)
            check_eq(r.get("ref"), c.next_ref - 1, "error carries the ref")
        await c.alive("after unknown %s" % op)
    await c.enqueue(q, "m")
    await c.consume(q, prefetch=1)
    f = await c.delivery(q)
    await c.ack(q, f["delivery_id"])
    await c.error("ack", 40400, "ack twice", queue=q, delivery_id=f["delivery_id"])
    await c.error("nack", 40400, "nack after ack", queue=q, delivery_id=f["delivery_id"])
    await c.enqueue(q, "m2")
    f2 = await c.delivery(q)
    await c.nack(q, f2["delivery_id"], requeue=False)
    await c.error("ack", 40400, "ack after nack (dead-lettered)", queue=q, delivery_id=f2["delivery_id"])
    await c.error("ack", 40400, "ack of another queue's delivery", queue=Q.qname("elsewhere"),
                  delivery_id=f2["delivery_id"])
    await b.still_fine("after unknown ids")
    await c.close()
    await b.close()


async def test_bad_queue_names():
    s = server()
    b = Bystander(s)
    await b.start()
    c = await Q.connect(s)
    stamp = str(time.time_ns())
    bad = ["", "$reserved", "has space", "tab\tq", "nl\nq", "nbsp\u00a0q", "zwsp\u200bq", "ctl\x01q",
           "x" * 251, "é" * 126, "ls\u2028q", "bom\ufeffq", "shy\u00adq", "mvs\u180eq", "del\x7fq",
           "ideo\u3000q", "c1\x85q"]
    for name in bad:
        for op, extra in (("enqueue", {"data": 1}), ("consume", {}), ("ack", {"delivery_id": "x"}),
                          ("nack", {"delivery_id": "x"}), ("cancel", {})):
            await c.error(op, 40001, "%s on queue %r" % (op, name[:20]), queue=name, **extra)
        await b.still_fine("after bad name %r" % name[:20])
    # the edges that are fine: 250 bytes, ':' namespaces, non-ASCII
    for name in [(stamp + "-").ljust(250, "q"), "ns:" + stamp + ":a", "日本語-" + stamp, "é" * 125]:
        check(len(name.encode()) <= 250, "test name within 250 bytes")
        r = await c.call("enqueue", queue=name, data=name)
        check_eq(r.get("op"), "ok", "enqueue on valid name %r (reply %r)" % (name[:20], r))
        await c.consume(name, prefetch=1)
        f = await c.delivery(name)
        check_eq((f["queue"], f["data"]), (name, name), "delivery on %r" % name[:20])
        await c.ack(name, f["delivery_id"])
        await c.cancel(name)
    await c.close()
    await b.close()


async def test_wrong_types_and_missing_fields():
    s = server()
    b = Bystander(s)
    await b.start()
    q = Q.qname("types")
    c = await Q.connect(s)
    cases = [
        ("enqueue", {"queue": q}),                        # no data
        ("enqueue", {"data": 1}),                         # no queue
        ("enqueue", {"queue": 5, "data": 1}),
        ("enqueue", {"queue": None, "data": 1}),
        ("enqueue", {"queue": [q], "data": 1}),
        ("enqueue", {"queue": q, "data": "!!notb64", "encoding": "base64"}),
        ("enqueue", {"queue": q, "data": 1, "encoding": "rot13"}),
        ("enqueue", {"queue": q, "data": 1, "idempotency_key": 5}),
        ("consume", {}),
        ("consume", {"queue": 1}),
        ("consume", {"queue": q, "prefetch": 0}),
        ("consume", {"queue": q, "prefetch": 1001}),
        ("consume", {"queue": q, "prefetch": -1}),
        ("consume", {"queue": q, "prefetch": "10"}),
        ("consume", {"queue": q, "prefetch": 2.5}),
        ("ack", {"queue": q}),                            # no delivery_id
        ("ack", {"delivery_id": "x"}),                    # no queue
        ("ack", {"queue": q, "delivery_id": 12}),
        ("ack", {"queue": q, "delivery_id": ["x"]}),
        ("nack", {"queue": q, "delivery_id": None}),
        ("nack", {"queue": q, "delivery_id": "x", "requeue": "yes"}),
        ("nack", {"queue": q, "delivery_id": "x", "requeue": 1}),
        ("cancel", {}),
        ("cancel", {"queue": {}}),
    ]
    for op, fields in cases:
        await c.error(op, 40000, "%s %r" % (op, fields), **fields)
        await b.still_fine("after %s %r" % (op, fields))
    # refused consumes did not register a consumer, refused enqueues stored nothing
    Q.wait_counts(s, q, (0, 0, 0))
    # prefetch edges are fine
    await c.consume(q, prefetch=1)
    await c.consume(q, prefetch=1000)
    Q.wait_counts(s, q, (0, 0, 1))
    await c.close()
    await b.close()


async def test_message_size_limit():
    s = server()
    q = Q.qname("size")
    c = await Q.connect(s)
    limit = c.connected.get("max_message_bytes", 65536)
    # data size is the JSON text: a string of n-2 chars is n bytes with quotes
    ok = await c.enqueue(q, "x" * (limit - 2))
    await c.error("enqueue", 41300, "enqueue one byte over the limit", queue=q, data="x" * (limit - 1))
    await c.enqueue(q, base64.b64encode(b"\x00" * limit).decode(), encoding="base64")
    await c.error("enqueue", 41300, "base64 one decoded byte over", queue=q,
                  data=base64.b64encode(b"\x00" * (limit + 1)).decode(), encoding="base64")
    await c.alive("after 41300")
    status, _, body = s.http("POST", Q.qpath(q, "/messages"), body={"data": "x" * (limit + 10)})
    T.check_rest_error(status, body, 41300, "REST enqueue over the limit")
    Q.wait_counts(s, q, (2, 0, 0))
    await c.consume(q, prefetch=2)
    got = await c.deliveries(q, 2)
    check_eq(got[0]["id"], ok["id"], "the largest allowed message is delivered")
    check_eq(len(got[0]["data"]), limit - 2, "whole")
    for f in got:
        await c.ack(q, f["delivery_id"])
    await c.close()


def test_rest_batch_with_one_oversize_message_enqueues_nothing():
    s = server()
    q = Q.qname("batchsize")
    batch = [{"data": 1}, {"data": "x" * 70000}, {"data": 3}]
    status, _, body = s.http("POST", Q.qpath(q, "/messages"), body=batch)
    T.check_rest_error(status, body, 41300, "batch with one message over the limit")
    Q.wait_counts(s, q, (0, 0, 0))


async def test_queue_max_depth_gets_42900():
    with T.Server(config={"queue_max_depth": 5}) as s:
        q = Q.qname("depth")
        c = await Q.connect(s)
        for i in range(5):
            await c.enqueue(q, i)
        r = await c.error("enqueue", (42900, 50300), "enqueue beyond queue_max_depth", queue=q, data=5)
        check_eq(r["error"]["code"], 42900, "the decision for this server: 42900")
        check(r["error"]["retryable"] is True, "42900 is retryable", r)
        status, _, body = s.http("POST", Q.qpath(q, "/messages"), body={"data": 5})
        T.check_rest_error(status, body, 42900, "REST enqueue beyond queue_max_depth")
        check(body["error"]["retryable"] is True, "REST 42900 is retryable", body)
        status, _, body = s.http("POST", Q.qpath(q, "/messages"), body=[{"data": 5}, {"data": 6}])
        check_eq(status, 429, "REST batch beyond queue_max_depth (body %r)" % (body,))
        # unacked counts toward the depth: consuming does not make room, acking does
        await c.consume(q, prefetch=1)
        f = await c.delivery(q)
        await c.error("enqueue", 42900, "still full with one unacked", queue=q, data=5)
        await c.ack(q, f["delivery_id"])
        await c.enqueue(q, "room again")
        Q.wait_counts(s, q, (4, 1, 1))
        # other queues are not affected by one full queue
        other = Q.qname("depth-other")
        await c.enqueue(other, "fine")
        await c.alive("after depth errors")
        await c.close()


async def test_dead_letter_queue_name_too_long_is_impossible():
    """250 bytes is the longest queue name so that {q}.dlq (254) is still valid."""
    s = server()
    q = ("d%d-" % time.time_ns()).ljust(250, "d")
    cfg = Q.put_queue(s, q, max_attempts=1)
    check_eq(cfg["dead_letter"], q + ".dlq", "default dead_letter of a 250-byte name")
    c = await Q.connect(s)
    await c.enqueue(q, "x")
    await c.consume(q, prefetch=1)
    f = await c.delivery(q)
    await c.nack(q, f["delivery_id"])  # attempt 1 of max 1 failed: dead-lettered
    Q.wait_counts(s, q + ".dlq", (1, 0, 0))
    await c.close()


def test_zz_server_exits_cleanly():
    SHARED.finish()


if __name__ == "__main__":
    try:
        T.main(globals())
    finally:
        SHARED.cleanup()
