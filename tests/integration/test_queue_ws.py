"""Durable queues over WebSocket, one consumer at a time: enqueue `ok` with an
id, consume `ok` then `delivery` frames of the contract's shape, FIFO order,
prefetch bounds what is unacked and a second `consume` updates it, ack /
nack / cancel (work given back returns to the head with attempt + 1, its old
delivery_id is then stale), base64 and idempotency keys on enqueue, ref-less
ops, queue info counts (ready, unacked, consumers) and queues made on first use."""

import asyncio
import base64

import ternlib as T
from ternlib import check, check_eq
import queuelib as Q
from queuelib import check_delivery

SHARED = T.Shared()


def server():
    return SHARED.get()


async def test_never_used_queue_answers_zeros():
    s = server()
    q = Q.qname("fresh")
    b = Q.info(s, q)
    check_eq((b["ready"], b["unacked"], b["consumers"]), (0, 0, 0), "a queue never used has zeros")


async def test_enqueue_consume_ack_roundtrip():
    s = server()
    q = Q.qname("rt")
    p = await Q.connect(s)
    r = await p.enqueue(q, {"text": "hi", "n": [1, 2]})
    Q.wait_counts(s, q, (1, 0, 0))
    c = await Q.connect(s)
    ok = await c.consume(q)
    check_eq(ok.get("op"), "ok", "consume ok")
    f = await c.delivery(q)
    check_delivery(f, q, "first delivery", attempt=1, data={"text": "hi", "n": [1, 2]})
    check_eq(f["id"], r["id"], "delivery id field = enqueue ok id")
    check("encoding" not in f, "no encoding for JSON data", f)
    check("channel" not in f, "no channel on a directly enqueued message", f)
    Q.wait_counts(s, q, (0, 1, 1))
    a = await c.ack(q, f["delivery_id"])
    check_eq(a.get("op"), "ok", "ack ok")
    Q.wait_counts(s, q, (0, 0, 1))
    check_eq(await c.quiet(q), [], "an acked message is not delivered again")
    await c.close()
    await p.close()
    await Q.await_counts(s, q, (0, 0, 0))


async def test_data_of_every_json_type_and_base64():
    s = server()
    q = Q.qname("types")
    c = await Q.connect(s)
    values = [None, True, False, 0, -1, 3.5, "", "ünïcödé ✓ 𝄞", "\"q\"\n\\", [], [1, "a", None], {},
              {"nested": {"a": [1, {"b": None}]}}]
    ids = [(await c.enqueue(q, v))["id"] for v in values]
    raw = bytes(range(256)) * 2
    rb = await c.enqueue(q, base64.b64encode(raw).decode(), encoding="base64")
    await c.consume(q, prefetch=100)
    got = await c.deliveries(q, len(values) + 1)
    for v, i, f in zip(values, ids, got):
        check_delivery(f, q, "delivery of %r" % (v,), attempt=1)
        check_eq((f["id"], f["data"], type(f["data"])), (i, v, type(v)), "data %r round-trips in order" % (v,))
    last = got[-1]
    check_eq(last["id"], rb["id"], "base64 message id")
    check_eq(last.get("encoding"), "base64", "delivery carries encoding base64")
    check_eq(base64.b64decode(last["data"]), raw, "base64 data decodes to the bytes sent")
    for f in got:
        await c.ack(q, f["delivery_id"])
    await c.close()


async def test_fifo_order_single_consumer():
    s = server()
    q = Q.qname("fifo")
    p = await Q.connect(s)
    ids = [(await p.enqueue(q, i))["id"] for i in range(50)]
    check_eq(len(set(ids)), 50, "every enqueue gets its own id")
    c = await Q.connect(s)
    await c.consume(q, prefetch=7)
    seen = []
    for _ in range(50):
        f = await c.delivery(q)
        seen.append((f["id"], f["data"]))
        await c.ack(q, f["delivery_id"])
    check_eq(seen, list(zip(ids, range(50))), "FIFO: deliveries in enqueue order")
    await c.close()
    await p.close()


async def test_prefetch_bounds_unacked_and_consume_again_updates_it():
    s = server()
    q = Q.qname("prefetch")
    p = await Q.connect(s)
    for i in range(20):
        await p.enqueue(q, i)
    c = await Q.connect(s)
    await c.consume(q, prefetch=3)
    first = await c.deliveries(q, 3)
    check_eq([f["data"] for f in first], [0, 1, 2], "the first three")
    check_eq(await c.quiet(q), [], "no fourth delivery while three are unacked (prefetch 3)")
    Q.wait_counts(s, q, (17, 3, 1))
    await c.ack(q, first[0]["delivery_id"])
    f = await c.delivery(q)
    check_eq(f["data"], 3, "an ack frees one slot: the next message comes")
    check_eq(await c.quiet(q), [], "and only one")
    # consume again on the same connection: updates prefetch, still one consumer
    r = await c.consume(q, prefetch=5)
    check_eq(r.get("op"), "ok", "consume again ok")
    more = await c.deliveries(q, 2)
    check_eq([m["data"] for m in more], [4, 5], "raising prefetch to 5 sends two more")
    check_eq(await c.quiet(q), [], "not more than prefetch 5 unacked")
    Q.wait_counts(s, q, (14, 5, 1))
    # default prefetch is 10
    c2 = await Q.connect(s)
    await c2.consume(q)
    got = await c2.deliveries(q, 10)
    check_eq([g["data"] for g in got], list(range(6, 16)), "default prefetch 10")
    check_eq(await c2.quiet(q), [], "no eleventh delivery with the default prefetch")
    Q.wait_counts(s, q, (4, 15, 2))
    await c.close()
    await c2.close()
    await p.close()


async def test_lowering_prefetch_holds_deliveries_until_under_it():
    s = server()
    q = Q.qname("lower")
    Q.enqueue_rest(s, q, [{"data": i} for i in range(10)])
    c = await Q.connect(s)
    await c.consume(q, prefetch=5)
    held = await c.deliveries(q, 5)
    await c.consume(q, prefetch=2)
    for f in held[:3]:
        await c.ack(q, f["delivery_id"])
    check_eq(await c.quiet(q), [], "two still unacked with prefetch 2: nothing new")
    await c.ack(q, held[3]["delivery_id"])
    f = await c.delivery(q)
    check_eq(f["data"], 5, "under the new prefetch: the next one")
    check_eq(await c.quiet(q), [], "and only one (two unacked)")
    Q.wait_counts(s, q, (4, 2, 1))
    await c.close()


async def test_prefetch_1000_is_the_maximum_and_is_honoured():
    s = server()
    q = Q.qname("p1000")
    for start in (0, 550):
        Q.enqueue_rest(s, q, [{"data": i} for i in range(start, start + 550)])
    c = await Q.connect(s)
    await c.consume(q, prefetch=1000)
    got = await c.deliveries(q, 1000, timeout=T.WAIT_S * 3)
    check_eq([f["data"] for f in got], list(range(1000)), "1000 deliveries in order")
    check_eq(await c.quiet(q), [], "not a 1001st")
    Q.wait_counts(s, q, (100, 1000, 1))
    await c.close()
    await Q.await_counts(s, q, (1100, 0, 0))


async def test_cancel_one_queue_keeps_the_other():
    s = server()
    qa, qb = Q.qname("ca"), Q.qname("cb")
    c = await Q.connect(s)
    await c.consume(qa)
    await c.consume(qb)
    await c.cancel(qa)
    p = await Q.connect(s)
    await p.enqueue(qa, "a")
    await p.enqueue(qb, "b")
    f = await c.delivery(qb)
    check_eq(f["data"], "b", "still consuming the other queue")
    await c.ack(qb, f["delivery_id"])
    check_eq(await c.quiet(qa), [], "nothing from the cancelled queue")
    Q.wait_counts(s, qa, (1, 0, 0))
    await c.close()
    await p.close()


async def test_nack_requeue_returns_to_head_with_attempt_plus_one():
    s = server()
    q = Q.qname("nack")
    p = await Q.connect(s)
    ids = [(await p.enqueue(q, i))["id"] for i in range(5)]
    c = await Q.connect(s)
    await c.consume(q, prefetch=2)
    a, b = await c.deliveries(q, 2)
    check_eq((a["data"], b["data"]), (0, 1), "first two")
    await c.nack(q, a["delivery_id"])  # requeue defaults to true
    again = await c.delivery(q)
    check_delivery(again, q, "redelivery after nack", attempt=2, data=0)
    check_eq(again["id"], ids[0], "same message id on redelivery")
    check(again["delivery_id"] != a["delivery_id"], "a new delivery_id on redelivery", a, again)
    # the old delivery id is stale now
    await c.error("ack", 40400, "ack of the nacked (stale) delivery_id", queue=q, delivery_id=a["delivery_id"])
    # explicit requeue true, twice more: attempt keeps counting
    await c.nack(q, again["delivery_id"], requeue=True)
    third = await c.delivery(q)
    check_delivery(third, q, "third delivery", attempt=3, data=0)
    await c.ack(q, third["delivery_id"])
    await c.ack(q, b["delivery_id"])
    rest = await c.deliveries(q, 2)
    check_eq([(f["data"], f["attempt"]) for f in rest], [(2, 1), (3, 1)], "then FIFO continues")
    for f in rest:
        await c.ack(q, f["delivery_id"])
    f = await c.delivery(q)
    await c.ack(q, f["delivery_id"])
    Q.wait_counts(s, q, (0, 0, 1))
    await c.close()
    await p.close()


async def test_cancel_gives_back_unacked_and_stops_deliveries():
    s = server()
    q = Q.qname("cancel")
    p = await Q.connect(s)
    for i in range(6):
        await p.enqueue(q, i)
    c = await Q.connect(s)
    await c.consume(q, prefetch=3)
    got = await c.deliveries(q, 3)
    await c.ack(q, got[0]["delivery_id"])
    await c.delivery(q)  # the slot freed by the ack is filled with message 3
    r = await c.cancel(q)
    check_eq(r.get("op"), "ok", "cancel ok")
    c.backlog = [f for f in c.backlog if f.get("op") != "delivery"]
    check_eq(await c.quiet(q), [], "no delivery follows the cancel ok")
    Q.wait_counts(s, q, (5, 0, 0))
    # the deliveries held at cancel are stale now
    await c.error("ack", 40400, "ack after cancel gave the delivery back", queue=q, delivery_id=got[1]["delivery_id"])
    # given back to the head, attempt + 1, still FIFO
    c2 = await Q.connect(s)
    await c2.consume(q, prefetch=10)
    again = await c2.deliveries(q, 5)
    check_eq([(f["data"], f["attempt"]) for f in again], [(1, 2), (2, 2), (3, 2), (4, 1), (5, 1)],
             "cancelled work returns to the head with attempt + 1")
    for f in again:
        await c2.ack(q, f["delivery_id"])
    # consuming again after cancel works
    await c2.cancel(q)
    await c.consume(q, prefetch=1)
    await p.enqueue(q, "after")
    f = await c.delivery(q)
    check_eq(f["data"], "after", "a cancelled consumer can consume again")
    await c.ack(q, f["delivery_id"])
    for cl in (c, c2, p):
        await cl.close()


async def test_idempotency_key_enqueues_once():
    s = server()
    q = Q.qname("idem")
    p = await Q.connect(s)
    r1 = await p.enqueue(q, {"v": 1}, idempotency_key="k1")
    r2 = await p.enqueue(q, {"v": 1}, idempotency_key="k1")
    check_eq(r2["id"], r1["id"], "same key returns the first id")
    p2 = await Q.connect(s)
    r3 = await p2.enqueue(q, {"v": 2}, idempotency_key="k1")
    check_eq(r3["id"], r1["id"], "same key from another connection")
    r4 = await p.enqueue(q, {"v": 3}, idempotency_key="k2")
    check(r4["id"] != r1["id"], "another key enqueues", r1, r4)
    Q.wait_counts(s, q, (2, 0, 0))
    c = await Q.connect(s)
    await c.consume(q)
    got = await c.deliveries(q, 2)
    check_eq([(f["id"], f["data"]) for f in got], [(r1["id"], {"v": 1}), (r4["id"], {"v": 3})], "each once")
    check_eq(await c.quiet(q), [], "no duplicate")
    for f in got:
        await c.ack(q, f["delivery_id"])
    for cl in (c, p, p2):
        await cl.close()


async def test_enqueue_idempotency_window_configurable():
    with T.Server(config={"idempotency_window_s": 1}) as s2:
        q = Q.qname("idemwin")
        c = await Q.connect(s2)
        r1 = await c.enqueue(q, 1, idempotency_key="w")
        r2 = await c.enqueue(q, 1, idempotency_key="w")
        check_eq(r2["id"], r1["id"], "same key within the window")
        await asyncio.sleep(3.0)
        r3 = await c.enqueue(q, 1, idempotency_key="w")
        check(r3["id"] != r1["id"], "same key well after the window enqueues again", r1, r3)
        Q.wait_counts(s2, q, (2, 0, 0))
        await c.close()


async def test_ref_less_ops_are_silent():
    s = server()
    q = Q.qname("noref")
    c = await Q.connect(s)
    await c.send({"op": "enqueue", "queue": q, "data": 1})
    await c.send({"op": "enqueue", "queue": q, "data": 2})
    await c.send({"op": "consume", "queue": q, "prefetch": 1})
    f = await c.delivery(q)
    check_eq(f["data"], 1, "ref-less enqueue and consume work")
    await c.send({"op": "nack", "queue": q, "delivery_id": f["delivery_id"]})
    f2 = await c.delivery(q)
    check_eq((f2["data"], f2["attempt"]), (1, 2), "ref-less nack requeued")
    await c.send({"op": "ack", "queue": q, "delivery_id": f2["delivery_id"]})
    f3 = await c.delivery(q)
    check_eq(f3["data"], 2, "ref-less ack settled")
    await c.send({"op": "cancel", "queue": q})
    await c.send({"op": "ping", "ref": 77})
    pong = await c.expect(lambda x: x.get("op") != "delivery", what="the pong")
    check_eq(pong, {"op": "pong", "ref": 77}, "ref-less successes get no reply")
    # A ref-less error is reported without ref
    await c.send({"op": "ack", "queue": q, "delivery_id": "no-such-delivery"})
    e = await c.expect(lambda x: x.get("op") == "error", what="error for ref-less bad ack")
    check("ref" not in e, "no ref on the error of a ref-less frame", e)
    T.check_error(e["error"], 40400, "ref-less ack of an unknown id")
    await c.alive("after ref-less error")
    await c.close()
    await Q.await_counts(s, q, (1, 0, 0))


async def test_consumers_count_and_disconnect_releases():
    s = server()
    q = Q.qname("count")
    cs = [await Q.connect(s) for _ in range(3)]
    for c in cs:
        await c.consume(q)
    Q.wait_counts(s, q, (0, 0, 3))
    await cs[0].consume(q, prefetch=2)  # consume again: still counted once
    Q.wait_counts(s, q, (0, 0, 3))
    await cs[0].close()
    await Q.await_counts(s, q, (0, 0, 2))
    await cs[1].cancel(q)
    Q.wait_counts(s, q, (0, 0, 1))
    # a REST pull is not a consumer
    Q.pull(s, q, wait_ms=0)
    Q.wait_counts(s, q, (0, 0, 1))
    for c in cs[1:]:
        await c.close()
    await Q.await_counts(s, q, (0, 0, 0))


async def test_one_connection_many_queues():
    s = server()
    qs = [Q.qname("many") for _ in range(20)]
    c = await Q.connect(s)
    for q in qs:
        await c.consume(q, prefetch=1)
    p = await Q.connect(s)
    for q in qs:
        await p.enqueue(q, q)
    got = {}
    for _ in qs:
        f = await c.delivery()
        got[f["queue"]] = f["data"]
        await c.ack(f["queue"], f["delivery_id"])
    check_eq(got, {q: q for q in qs}, "one delivery from each of 20 queues on one connection")
    await c.close()
    await p.close()


async def test_channels_and_queues_are_separate_namespaces():
    """A queue and a channel of the same name do not see each other's messages
    (unless a binding says so)."""
    s = server()
    name = Q.qname("same")
    c = await Q.connect(s)
    await c.subscribe(name)
    await c.consume(name)
    await c.enqueue(name, "to-queue")
    await c.publish(name, "to-channel")
    d = await c.delivery(name)
    m = await c.message(name)
    check_eq((d["data"], m["data"]), ("to-queue", "to-channel"), "each went to its own kind")
    await c.ack(name, d["delivery_id"])
    check_eq(await c.quiet(name), [], "the channel message was not enqueued")
    check_eq([f for f in c.backlog if f.get("op") == "message"], [], "the queued message was not published")
    await c.close()


def test_zz_server_exits_cleanly():
    """Last: the shared server stops on SIGTERM with exit code 0 and never crashed."""
    SHARED.finish()


if __name__ == "__main__":
    try:
        T.main(globals())
    finally:
        SHARED.cleanup()
