"""Competing consumers and redelivery: several consumers on one queue get
disjoint sets covering every message; a consumer that disconnects gives its
unacked work back to the head with attempt + 1; a delivery not acked within
ack_timeout_ms comes again with attempt + 1 and a new delivery_id (the old one
is stale: 40400); after max_attempts failed deliveries, or on nack with
requeue false, the message moves to the dead-letter queue ({q}.dlq by default,
or the configured one); the per-queue metrics count it all."""

import asyncio
import time

import ternlib as T
from ternlib import check, check_eq
import queuelib as Q
from queuelib import check_delivery

SHARED = T.Shared()


def server():
    return SHARED.get()


async def test_competing_consumers_disjoint_and_complete():
    s = server()
    q = Q.qname("compete")
    n_msgs, n_cons = 400, 4
    producers = [await Q.connect(s) for _ in range(2)]
    consumers = [await Q.connect(s) for _ in range(n_cons)]
    got = [[] for _ in range(n_cons)]
    done = asyncio.Event()

    async def consume(i):
        c = consumers[i]
        await c.consume(q, prefetch=5)
        while not done.is_set():
            try:
                f = await c.delivery(q, timeout=0.5)
            except T.TestFailure:
                continue
            check_delivery(f, q, "competing delivery")
            got[i].append((f["id"], f["data"], f["attempt"]))
            await c.ack(q, f["delivery_id"])
            if sum(len(g) for g in got) >= n_msgs:
                done.set()

    tasks = [asyncio.ensure_future(consume(i)) for i in range(n_cons)]
    await Q.await_counts(s, q, (0, 0, n_cons))
    enq = {}

    async def produce(p):
        for i in range(p, n_msgs, 2):
            r = await producers[p].enqueue(q, i)
            enq[r["id"]] = i
    await asyncio.gather(*[produce(p) for p in range(2)])
    try:
        await asyncio.wait_for(done.wait(), T.WAIT_S * 3)
    except asyncio.TimeoutError:
        raise T.TestFailure("only %d of %d messages delivered" % (sum(len(g) for g in got), n_msgs))
    done.set()
    await asyncio.gather(*tasks)  # each ends within 0.5 s; then nobody else reads
    for c in consumers:
        check_eq(await c.quiet(q), [], "nothing more after every message was acked")
    all_ids = [g[0] for gs in got for g in gs]
    check_eq(len(all_ids), n_msgs, "exactly one delivery per message")
    check_eq(set(all_ids), set(enq), "deliveries cover every enqueued message")
    for i in range(n_cons):
        for j in range(i + 1, n_cons):
            both = set(g[0] for g in got[i]) & set(g[0] for g in got[j])
            check(not both, "consumers %d and %d got disjoint sets" % (i, j), sorted(both)[:5])
    for gs in got:
        for mid, data, attempt in gs:
            check_eq((data, attempt), (enq[mid], 1), "data and attempt of %s" % mid)
        # each consumer sees its share in FIFO order per producer
        for p in range(2):
            mine = [d for _, d, _ in gs if d % 2 == p]
            check_eq(mine, sorted(mine), "a consumer's share of producer %d stays in order" % p)
    print("  split across consumers: %s" % [len(g) for g in got])
    Q.wait_counts(s, q, (0, 0, n_cons))
    for c in producers + consumers:
        await c.close()


async def test_consumer_disconnect_redelivers_to_another():
    s = server()
    q = Q.qname("disc")
    p = await Q.connect(s)
    ids = [(await p.enqueue(q, i))["id"] for i in range(8)]
    a = await Q.connect(s)
    await a.consume(q, prefetch=3)
    held = await a.deliveries(q, 3)
    check_eq([f["data"] for f in held], [0, 1, 2], "A holds the first three")
    await a.ack(q, held[0]["delivery_id"])
    held.append(await a.delivery(q))
    b = await Q.connect(s)
    await b.consume(q, prefetch=20)
    early = await b.deliveries(q, 4)
    check_eq([(f["data"], f["attempt"]) for f in early], [(4, 1), (5, 1), (6, 1), (7, 1)],
             "B gets the rest while A holds its three")
    await a.ws.close()  # A goes away without acking 1, 2, 3
    back = await b.deliveries(q, 3)
    check_eq([(f["id"], f["data"], f["attempt"]) for f in back],
             [(ids[1], 1, 2), (ids[2], 2, 2), (ids[3], 3, 2)],
             "A's unacked deliveries come to B with attempt + 1, in order")
    for f in early + back:
        await b.ack(q, f["delivery_id"])
    # A's delivery ids are stale now, on any transport
    status, _, body = Q.ack_rest(s, q, [held[1]["delivery_id"]])
    T.check_rest_error(status, body, 40400, "REST ack of a delivery held by a disconnected consumer")
    Q.wait_counts(s, q, (0, 0, 1))
    await b.close()
    await p.close()


async def test_abrupt_disconnect_without_close_frame_redelivers():
    """A consumer whose TCP connection just ends (FIN, then RST: no WebSocket
    close frame) gives its work back as well."""
    import json as _json
    import socket as _socket
    import struct as _struct
    s = server()
    q = Q.qname("abrupt")
    Q.enqueue_rest(s, q, [{"data": i} for i in range(3)])
    for linger_rst in (False, True):
        raw = T.RawWS(s.port)
        kind, first = raw.recv_message()
        check_eq(_json.loads(first).get("op"), "connected", "raw client greeted")
        raw.send_json({"op": "consume", "queue": q, "prefetch": 2, "ref": 1})
        got = []
        for _ in range(50):
            kind, payload = raw.recv_message()
            f = _json.loads(payload)
            if f.get("op") == "delivery":
                got.append(f)
            if len(got) == 2:
                break
        check_eq(len(got), 2, "two deliveries to the raw client")
        if linger_rst:
            raw.sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_LINGER, _struct.pack("ii", 1, 0))
        raw.close()
        await Q.await_counts(s, q, (3, 0, 0))
    c = await Q.connect(s)
    await c.consume(q, prefetch=10)
    back = await c.deliveries(q, 3)
    check_eq([(f["data"], f["attempt"]) for f in back], [(0, 3), (1, 3), (2, 1)],
             "given back twice (FIN, then RST), in order")
    for f in back:
        await c.ack(q, f["delivery_id"])
    await c.close()


async def test_disconnect_returns_to_head_before_newer_messages():
    """Given-back work goes to the head: it comes before messages that were
    enqueued after it and never delivered."""
    s = server()
    q = Q.qname("head")
    p = await Q.connect(s)
    for i in range(4):
        await p.enqueue(q, i)
    a = await Q.connect(s)
    await a.consume(q, prefetch=2)
    await a.deliveries(q, 2)
    await a.close()
    await Q.await_counts(s, q, (4, 0, 0))
    b = await Q.connect(s)
    await b.consume(q, prefetch=1)
    order = []
    for _ in range(4):
        f = await b.delivery(q)
        order.append((f["data"], f["attempt"]))
        await b.ack(q, f["delivery_id"])
    check_eq(order, [(0, 2), (1, 2), (2, 1), (3, 1)], "given-back messages first, in their order")
    await b.close()
    await p.close()


async def test_ack_timeout_redelivers_with_new_delivery_id():
    s = server()
    q = Q.qname("timeout")
    # 1000 ms: long enough that an ASan build acks the second delivery in time
    cfg = Q.put_queue(s, q, ack_timeout_ms=1000)
    check_eq(cfg.get("ack_timeout_ms"), 1000, "PUT answers the new ack_timeout_ms")
    p = await Q.connect(s)
    r = await p.enqueue(q, "slow")
    c = await Q.connect(s)
    await c.consume(q, prefetch=1)
    t0 = time.monotonic()
    f1 = await c.delivery(q)
    check_delivery(f1, q, "first delivery", attempt=1, data="slow")
    f2 = await c.delivery(q)  # not acked: comes back after ~300 ms
    elapsed = time.monotonic() - t0
    check_delivery(f2, q, "delivery after the ack timeout", attempt=2, data="slow")
    check_eq(f2["id"], r["id"], "same message")
    check(f2["delivery_id"] != f1["delivery_id"], "new delivery_id", f1, f2)
    await c.ack(q, f2["delivery_id"])
    check(elapsed >= 0.9, "not redelivered before the ack timeout (%.3fs)" % elapsed)
    await c.error("ack", 40400, "ack of the timed-out (stale) delivery_id", queue=q, delivery_id=f1["delivery_id"])
    check_eq(await c.quiet(q, settle_s=1.5), [], "an acked delivery does not time out")
    Q.wait_counts(s, q, (0, 0, 1))
    await c.close()
    await p.close()


async def test_timed_out_delivery_returns_before_waiting_messages():
    s = server()
    q = Q.qname("timeouthead")
    Q.put_queue(s, q, ack_timeout_ms=800)
    ids = [m["id"] for m in Q.enqueue_rest(s, q, [{"data": i} for i in range(3)])]
    c = await Q.connect(s)
    await c.consume(q, prefetch=1)
    f1 = await c.delivery(q)
    f2 = await c.delivery(q)  # after the timeout: the head again, not message 1
    check_eq([(f1["id"], f1["attempt"]), (f2["id"], f2["attempt"])], [(ids[0], 1), (ids[0], 2)],
             "a timed-out delivery goes back to the head")
    await c.ack(q, f2["delivery_id"])
    rest = []
    for _ in range(2):
        f = await c.delivery(q)
        rest.append(f["id"])
        await c.ack(q, f["delivery_id"])
    check_eq(rest, ids[1:], "then the others in order")
    await c.close()


async def test_ack_timeout_moves_delivery_to_another_consumer():
    """After a timeout the message may go to any consumer; with the first one's
    prefetch full, it goes to the other, and the first one's ack is refused."""
    s = server()
    q = Q.qname("timeout2")
    Q.put_queue(s, q, ack_timeout_ms=1000)
    p = await Q.connect(s)
    await p.enqueue(q, "m")
    a = await Q.connect(s)
    await a.consume(q, prefetch=1)
    fa = await a.delivery(q)
    await p.enqueue(q, "filler")  # A's slot frees on the timeout; keep one ready for it
    b = await Q.connect(s)
    await b.consume(q, prefetch=1)
    fb = await b.delivery(q)
    got = {fa["data"]: fa, fb["data"]: fb}
    check_eq(set(got), {"m", "filler"}, "both messages out", fa, fb)
    # Neither acks: after the timeout both come back with attempt 2, one each.
    a2 = await a.delivery(q, timeout=T.WAIT_S)
    b2 = await b.delivery(q, timeout=T.WAIT_S)
    check_eq(sorted([a2["data"], b2["data"]]), ["filler", "m"], "both redelivered")
    check_eq((a2["attempt"], b2["attempt"]), (2, 2), "attempt 2 each")
    for c, f in ((a, a2), (b, b2)):
        await c.ack(q, f["delivery_id"])
    await a.error("ack", 40400, "stale id after timeout", queue=q, delivery_id=fa["delivery_id"])
    await b.error("ack", 40400, "stale id after timeout", queue=q, delivery_id=fb["delivery_id"])
    for cl in (a, b, p):
        await cl.close()


async def test_max_attempts_moves_to_default_dlq():
    s = server()
    q = Q.qname("dlq")
    cfg = Q.put_queue(s, q, ack_timeout_ms=10000, max_attempts=3)
    check_eq((cfg.get("max_attempts"), cfg.get("dead_letter")), (3, q + ".dlq"), "config with default dead_letter")
    m0 = s.metrics()
    p = await Q.connect(s)
    r = await p.enqueue(q, {"poison": True})
    await p.enqueue(q, "good")
    c = await Q.connect(s)
    await c.consume(q, prefetch=1)
    attempts = []
    for _ in range(3):
        f = await c.delivery(q, pred=lambda f: f["id"] == r["id"])
        attempts.append(f["attempt"])
        await c.nack(q, f["delivery_id"])  # requeue true: counts as a failed delivery
    check_eq(attempts, [1, 2, 3], "attempt counts deliveries")
    good = await c.delivery(q)
    check_eq((good["data"], good["attempt"]), ("good", 1), "after the third failure, the next message")
    await c.ack(q, good["delivery_id"])
    check_eq(await c.quiet(q, settle_s=0.8), [], "the poison message is not delivered a fourth time")
    Q.wait_counts(s, q, (0, 0, 1))
    Q.wait_counts(s, q + ".dlq", (1, 0, 0))
    d = await Q.connect(s)
    await d.consume(q + ".dlq")
    dl = await d.delivery(q + ".dlq")
    check_delivery(dl, q + ".dlq", "dead-lettered delivery", data={"poison": True})
    check_eq(dl["id"], r["id"], "the message moved keeps its id")
    await d.ack(q + ".dlq", dl["delivery_id"])
    # the dlq was created with default options
    dcfg = Q.put_queue(s, q + ".dlq")
    check_eq((dcfg.get("ack_timeout_ms"), dcfg.get("max_attempts")), (30000, 5), "the dlq has default options")
    m1 = s.metrics()
    dead = Q.queue_metric(m1, "tern_queue_dead_lettered_total", q)
    check(dead is not None, "tern_queue_dead_lettered_total{queue=%r} present" % q)
    check_eq(dead - (Q.queue_metric(m0, "tern_queue_dead_lettered_total", q) or 0), 1, "one dead-lettered")
    red = Q.queue_metric(m1, "tern_queue_redelivered_total", q)
    check(red is not None and red >= 2, "two redeliveries counted", red)
    dlv = Q.queue_metric(m1, "tern_queue_delivered_total", q)
    check(dlv is not None and dlv >= 2, "deliveries counted", dlv)
    for cl in (c, d, p):
        await cl.close()


async def test_max_attempts_through_ack_timeouts():
    s = server()
    q = Q.qname("dlqt")
    Q.put_queue(s, q, ack_timeout_ms=300, max_attempts=2)
    p = await Q.connect(s)
    r = await p.enqueue(q, "never acked")
    c = await Q.connect(s)
    await c.consume(q, prefetch=1)
    f1 = await c.delivery(q)
    f2 = await c.delivery(q)
    check_eq((f1["attempt"], f2["attempt"]), (1, 2), "two deliveries")
    check_eq(await c.quiet(q, settle_s=1.0), [], "no third delivery with max_attempts 2")
    await Q.await_counts(s, q, (0, 0, 1))
    await Q.await_counts(s, q + ".dlq", (1, 0, 0))
    out = Q.pull(s, q + ".dlq", max_n=10)
    check_eq([(d["id"], d["data"]) for d in out], [(r["id"], "never acked")], "in the dlq")
    Q.ack_rest_ok(s, q + ".dlq", [out[0]["delivery_id"]])
    await c.close()
    await p.close()


async def test_max_attempts_counts_disconnects_and_cancels():
    """A delivery held by a consumer that disconnects or cancels failed too:
    with max_attempts 2, a disconnect then a cancel dead-letter the message."""
    s = server()
    q = Q.qname("dlqdisc")
    Q.put_queue(s, q, max_attempts=2)
    r = Q.enqueue_rest(s, q, {"data": "held twice"})
    a = await Q.connect(s)
    await a.consume(q, prefetch=1)
    f1 = await a.delivery(q)
    await a.close()
    b = await Q.connect(s)
    await b.consume(q, prefetch=1)
    f2 = await b.delivery(q)
    check_eq((f1["attempt"], f2["attempt"]), (1, 2), "the disconnect counted as a failed delivery")
    await b.cancel(q)
    await Q.await_counts(s, q, (0, 0, 0))
    await Q.await_counts(s, q + ".dlq", (1, 0, 0))
    got = Q.pull(s, q + ".dlq")
    check_eq(got[0]["id"], r[0]["id"], "dead-lettered after the second failed delivery")
    Q.ack_rest_ok(s, q + ".dlq", [got[0]["delivery_id"]])
    await b.close()


async def test_default_dead_letter_of_a_queue_named_x_dlq_is_x_dlq_dlq():
    """The contract's default dead-letter queue is `{q}.dlq` for every q, so a
    message failing in `x.dlq` (a dead-letter queue, or any queue so named)
    moves to `x.dlq.dlq` (created with default options), not back into `x.dlq`."""
    s = server()
    q = Q.qname("chain") + ".dlq"
    cfg = Q.put_queue(s, q)
    check_eq(cfg.get("dead_letter"), q + ".dlq", "PUT %s: default dead_letter is {q}.dlq" % q)
    r = Q.enqueue_rest(s, q, {"data": "fails in a .dlq"})
    d = Q.pull(s, q)
    Q.ack_rest_ok(s, q, [d[0]["delivery_id"]], verb="nack", requeue=False)
    await Q.await_counts(s, q + ".dlq", (1, 0, 0))
    check_eq(Q.counts(s, q), (0, 0, 0), "moved out of " + q)
    got = Q.pull(s, q + ".dlq")
    check_eq(got[0]["id"], r[0]["id"], "the same message in {q}.dlq")
    Q.ack_rest_ok(s, q + ".dlq", [got[0]["delivery_id"]])


async def test_dead_letter_of_a_longest_dlq_does_not_crash():
    """{q}.dlq of a 250-byte queue is 254 bytes; its own {q}.dlq.dlq would not
    be a valid name. The contract does not say what happens then: the server
    must stay up, answer the nack, and not lose the message silently."""
    s = server()
    q = ("z%d-" % time.time_ns()).ljust(250, "z")
    dlq = q + ".dlq"
    Q.enqueue_rest(s, dlq, {"data": "deep"})
    d = Q.pull(s, dlq)
    status, _, body = Q.ack_rest(s, dlq, [d[0]["delivery_id"]], verb="nack", requeue=False)
    check(status in (200, 400, 404, 409, 500, 503), "nack answered", status, body)
    deadline = time.monotonic() + T.WAIT_S
    info = Q.info(s, dlq)
    while info["ready"] + info["unacked"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
        info = Q.info(s, dlq)
    print("  nack(requeue false) in a 254-byte queue: %d %r; queue now %r" % (status, body, info))
    check(s.proc.poll() is None, "server alive")
    if status == 200:
        # settled: then the message must still be somewhere a client can reach
        # (this server keeps it in the same queue: a *.dlq is its own dead-letter queue)
        check_eq(info["ready"] + info["unacked"], 1, "the message is not silently dropped")
        d = Q.pull(s, dlq)
        Q.ack_rest_ok(s, dlq, [d[0]["delivery_id"]])


async def test_nack_without_requeue_dead_letters_at_once():
    s = server()
    q = Q.qname("nackdl")
    dead = Q.qname("custom-dead")
    cfg = Q.put_queue(s, q, dead_letter=dead)
    check_eq(cfg.get("dead_letter"), dead, "custom dead_letter")
    p = await Q.connect(s)
    r = await p.enqueue(q, "reject me")
    await p.enqueue(q, "keep me")
    c = await Q.connect(s)
    await c.consume(q, prefetch=1)
    f = await c.delivery(q)
    await c.nack(q, f["delivery_id"], requeue=False)
    nxt = await c.delivery(q)
    check_eq(nxt["data"], "keep me", "the rejected message is gone from the queue")
    await c.ack(q, nxt["delivery_id"])
    Q.wait_counts(s, q, (0, 0, 1))
    Q.wait_counts(s, dead, (1, 0, 0))
    Q.wait_counts(s, q + ".dlq", (0, 0, 0))
    out = Q.pull(s, dead)
    check_eq([(d["id"], d["data"]) for d in out], [(r["id"], "reject me")], "in the configured dead-letter queue")
    await c.error("ack", 40400, "ack of a dead-lettered delivery", queue=q, delivery_id=f["delivery_id"])
    Q.ack_rest_ok(s, dead, [out[0]["delivery_id"]])
    await c.close()
    await p.close()


async def test_queue_metrics_series():
    s = server()
    q = Q.qname("metrics")
    p = await Q.connect(s)
    for i in range(5):
        await p.enqueue(q, i)
    c = await Q.connect(s)
    await c.consume(q, prefetch=2)
    f = await c.deliveries(q, 2)
    await c.nack(q, f[0]["delivery_id"])
    await c.delivery(q)
    await Q.await_counts(s, q, (3, 2, 1))
    status, _, text = s.http("GET", "/metrics")
    check_eq(status, 200, "GET /metrics")
    m = T.parse_metrics(text)
    want = {"tern_queue_ready": 3, "tern_queue_unacked": 2, "tern_queue_consumers": 1,
            "tern_queue_delivered_total": (2, 3), "tern_queue_redelivered_total": 1,
            "tern_queue_dead_lettered_total": 0}
    for name, v in want.items():
        got = Q.queue_metric(m, name, q)
        check(got is not None, "%s{queue=%r} present in /metrics" % (name, q),
              [l for l in text.splitlines() if "queue" in l][:20])
        if isinstance(v, tuple):  # delivered may or may not count redeliveries
            check(got in v, "%s{queue=%r} in %r" % (name, q, v), got)
        else:
            check_eq(got, v, "%s{queue=%r}" % (name, q))
    await c.close()
    await p.close()


def test_metrics_label_values_escaped():
    """Queue names may hold `"` and `\\`: the label value is escaped as the
    Prometheus text format asks, so the exposition stays parseable."""
    s = server()
    q = 'we"ird\\q{%s}' % Q.qname("m")
    Q.enqueue_rest(s, q, {"data": 1})
    status, _, text = s.http("GET", "/metrics")
    esc = q.replace("\\", "\\\\").replace('"', '\\"')
    line = 'tern_queue_ready{queue="%s"} 1' % esc
    check(line in text.splitlines(), "escaped series present: %s" % line,
          [l for l in text.splitlines() if "ird" in l][:3])
    d = Q.pull(s, q)
    Q.ack_rest_ok(s, q, [d[0]["delivery_id"]])


def test_zz_server_exits_cleanly():
    SHARED.finish()


if __name__ == "__main__":
    try:
        T.main(globals())
    finally:
        SHARED.cleanup()
