"""Bindings (fan-out into durable queues): a queue bound to channel patterns
gets a durable copy of every message published on a matching channel, before
the publisher's `ok`; one message lands in several queues; `*` only ends a
pattern and matches any rest (`:` included), a pattern without `*` matches one
name; the copy's delivery carries the original's channel, name and id;
an idempotent re-publish makes no second copy; `bind` replaces the list."""

import base64

import ternlib as T
from ternlib import check, check_eq
import queuelib as Q
from queuelib import check_delivery

SHARED = T.Shared()


def server():
    return SHARED.get()


async def test_one_message_copied_into_two_queues():
    s = server()
    ns = Q.qname("orders")
    qa, qb = Q.qname("billing"), Q.qname("shipping")
    ca = Q.put_queue(s, qa, bind=[ns + ":*"])
    check_eq(ca.get("bind"), [ns + ":*"], "PUT answers the bind list")
    Q.put_queue(s, qb, bind=[ns + ":*"])
    p = await Q.connect(s)
    sub = await Q.connect(s)
    await sub.subscribe(ns + ":eu")
    r = await p.publish(ns + ":eu", {"order": 1}, name="created")
    # durable before the publisher's ok: counted at once, with no consumer
    check_eq(Q.counts(s, qa), (1, 0, 0), "copy in %s right after the publish ok" % qa)
    check_eq(Q.counts(s, qb), (1, 0, 0), "copy in %s right after the publish ok" % qb)
    m = await sub.message(ns + ":eu")
    check_eq(m["id"], r["id"], "subscribers still get the message")
    c = await Q.connect(s)
    await c.consume(qa)
    await c.consume(qb)
    got = {}
    for _ in range(2):
        f = await c.delivery()
        got[f["queue"]] = f
        await c.ack(f["queue"], f["delivery_id"])
    check_eq(sorted(got), sorted([qa, qb]), "one delivery from each bound queue")
    for q, f in got.items():
        check_delivery(f, q, "copy in " + q, attempt=1, data={"order": 1})
        check_eq((f.get("channel"), f.get("name"), f["id"]), (ns + ":eu", "created", r["id"]),
                 "the copy carries the original's channel, name and id")
    check(got[qa]["delivery_id"] != got[qb]["delivery_id"], "each copy has its own delivery id")
    check_eq(await c.quiet(qa), [], "one copy per queue")
    for cl in (c, p, sub):
        await cl.close()


async def test_pattern_matching_rules():
    s = server()
    ns = Q.qname("pat")
    star, exact = Q.qname("star"), Q.qname("exact")
    Q.put_queue(s, star, bind=[ns + ":*"])
    Q.put_queue(s, exact, bind=[ns + ":eu"])
    p = await Q.connect(s)
    cases = [  # channel, lands in star, lands in exact
        (ns + ":eu", True, True),
        (ns + ":us", True, False),
        (ns + ":eu:paris", True, False),   # * matches any rest, ':' included
        (ns + ":eu2", True, False),
        (ns, False, False),                # no ':' after the prefix
        (ns + "x:eu", False, False),
        ("other:" + ns + ":eu", False, False),
    ]
    want_star, want_exact = [], []
    for i, (ch, in_star, in_exact) in enumerate(cases):
        await p.publish(ch, i)
        if in_star:
            want_star.append(i)
        if in_exact:
            want_exact.append(i)
    for q, want in ((star, want_star), (exact, want_exact)):
        Q.wait_counts(s, q, (len(want), 0, 0))
        got = Q.pull(s, q, max_n=100)
        check_eq([d["data"] for d in got], want, "copies in %s, in publish order" % q)
        if got:
            Q.ack_rest_ok(s, q, [d["delivery_id"] for d in got])
    await p.close()


async def test_rest_publish_batch_is_copied_and_base64_kept():
    s = server()
    ns = Q.qname("restpub")
    q = Q.qname("restbound")
    Q.put_queue(s, q, bind=[ns + ":*"])
    raw = b"\x00\x01binary\xff"
    out = s.publish_rest(ns + ":a", [{"data": 1}, {"name": "n2", "data": 2},
                                     {"data": base64.b64encode(raw).decode(), "encoding": "base64"}])
    check_eq(Q.counts(s, q), (3, 0, 0), "a REST batch publish copied before its 201")
    c = await Q.connect(s)
    await c.consume(q)
    got = await c.deliveries(q, 3)
    check_eq([f["id"] for f in got], [o["id"] for o in out], "copies in order with the original ids")
    check_eq([f.get("name") for f in got], [None, "n2", None], "name only when given")
    check_eq(got[2].get("encoding"), "base64", "encoding kept on the copy")
    check_eq(base64.b64decode(got[2]["data"]), raw, "binary data kept")
    for f in got:
        await c.ack(q, f["delivery_id"])
    await c.close()


async def test_idempotent_republish_makes_no_second_copy():
    s = server()
    ns = Q.qname("idemb")
    q = Q.qname("idemq")
    Q.put_queue(s, q, bind=[ns])
    p = await Q.connect(s)
    r1 = await p.publish(ns, "once", idempotency_key="k")
    r2 = await p.publish(ns, "once", idempotency_key="k")
    check_eq(r2["seq"], r1["seq"], "re-publish answered with the first seq")
    s.publish_rest(ns, {"data": "once", "idempotency_key": "k"})
    Q.wait_counts(s, q, (1, 0, 0))
    got = Q.pull(s, q, max_n=10)
    check_eq([d["id"] for d in got], [r1["id"]], "exactly one copy")
    Q.ack_rest_ok(s, q, [got[0]["delivery_id"]])
    await p.close()


async def test_bind_replace_and_unbind():
    s = server()
    ns = Q.qname("rebind")
    q = Q.qname("rebindq")
    Q.put_queue(s, q, bind=[ns + ":a"])
    p = await Q.connect(s)
    await p.publish(ns + ":a", "a1")
    Q.put_queue(s, q, bind=[ns + ":b"])
    await p.publish(ns + ":a", "a2")
    await p.publish(ns + ":b", "b1")
    Q.put_queue(s, q, bind=[])
    await p.publish(ns + ":b", "b2")
    Q.wait_counts(s, q, (2, 0, 0))
    got = Q.pull(s, q, max_n=10)
    check_eq([d["data"] for d in got], ["a1", "b1"], "only what matched the bindings in force")
    Q.ack_rest_ok(s, q, [d["delivery_id"] for d in got])
    await p.close()


async def test_bound_copies_compete_and_ack_independently():
    """Copies in one queue are work items like any other: nack one copy, ack
    the other queue's copy; each queue's state is its own."""
    s = server()
    ns = Q.qname("indep")
    qa, qb = Q.qname("ia"), Q.qname("ib")
    for q in (qa, qb):
        Q.put_queue(s, q, bind=[ns + ":*"])
    p = await Q.connect(s)
    await p.publish(ns + ":x", "m")
    c = await Q.connect(s)
    await c.consume(qa)
    await c.consume(qb)
    fs = {}
    for _ in range(2):
        f = await c.delivery()
        fs[f["queue"]] = f
    await c.ack(qa, fs[qa]["delivery_id"])
    await c.nack(qb, fs[qb]["delivery_id"])
    again = await c.delivery(qb)
    check_eq((again["attempt"], again.get("channel"), again["data"]), (2, ns + ":x", "m"),
             "a requeued copy keeps its channel")
    await c.error("ack", 40400, "a delivery id of one queue is unknown on the other", queue=qa,
                  delivery_id=again["delivery_id"])
    await c.ack(qb, again["delivery_id"])
    check_eq(await c.quiet(qa), [], "nothing more in " + qa)
    for q in (qa, qb):
        Q.wait_counts(s, q, (0, 0, 1))
    await c.close()
    await p.close()


async def test_many_queues_bound_to_one_channel():
    s = server()
    ns = Q.qname("wide")
    qs = [Q.qname("wq") for _ in range(10)]
    for q in qs:
        Q.put_queue(s, q, bind=[ns + ":*"])
    p = await Q.connect(s)
    rs = [await p.publish(ns + ":e", i) for i in range(5)]
    for q in qs:
        check_eq(Q.counts(s, q), (5, 0, 0), "five copies in " + q)
        got = Q.pull(s, q, max_n=10)
        check_eq([d["id"] for d in got], [r["id"] for r in rs], "in order in " + q)
        Q.ack_rest_ok(s, q, [d["delivery_id"] for d in got])
    await p.close()


async def test_star_alone_matches_every_channel():
    with T.Server() as s2:
        q = Q.qname("all")
        Q.put_queue(s2, q, bind=["*"])
        p = await Q.connect(s2)
        chans = ["a", "b:c", "ünï:x", Q.qname("any")]
        for ch in chans:
            await p.publish(ch, ch)
        got = Q.pull(s2, q, max_n=10)
        check_eq([(d["channel"], d["data"]) for d in got], [(c, c) for c in chans], "'*' copies every channel")
        Q.ack_rest_ok(s2, q, [d["delivery_id"] for d in got])
        await p.close()


def test_zz_server_exits_cleanly():
    SHARED.finish()


if __name__ == "__main__":
    try:
        T.main(globals())
    finally:
        SHARED.cleanup()
