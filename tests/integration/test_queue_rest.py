"""Durable queues over REST: PUT /v1/queues/{q} merges options and answers the
whole configuration; enqueue single and batch (201, ids in order); pull with
max and long-poll wait_ms (returns as soon as work arrives, or empty after
wait_ms); ack and nack by delivery_ids (unknown or stale ids: 404 40400 naming
them, the known ones still settled); delivery ids valid across REST and
WebSocket; GET queue info; percent-encoded names; curl as a user would."""

import asyncio
import json
import time

import ternlib as T
from ternlib import check, check_eq
import queuelib as Q

SHARED = T.Shared()


def server():
    return SHARED.get()


def test_put_queue_defaults_and_merge():
    s = server()
    q = Q.qname("cfg")
    cfg = Q.put_queue(s, q)
    check_eq({k: cfg.get(k) for k in ("queue", "ack_timeout_ms", "max_attempts", "dead_letter", "bind")},
             {"queue": q, "ack_timeout_ms": 30000, "max_attempts": 5, "dead_letter": q + ".dlq", "bind": []},
             "PUT with no options answers the defaults")
    cfg = Q.put_queue(s, q, max_attempts=3)
    check_eq((cfg["max_attempts"], cfg["ack_timeout_ms"]), (3, 30000), "merge: only max_attempts changes")
    cfg = Q.put_queue(s, q, ack_timeout_ms=500, bind=["a:*", "b"])
    check_eq((cfg["max_attempts"], cfg["ack_timeout_ms"], cfg["bind"]), (3, 500, ["a:*", "b"]),
             "merge keeps max_attempts, sets ack_timeout_ms and bind")
    cfg = Q.put_queue(s, q, bind=["c:*"])
    check_eq(cfg["bind"], ["c:*"], "bind replaces the pattern list")
    cfg = Q.put_queue(s, q, dead_letter="elsewhere")
    check_eq((cfg["dead_letter"], cfg["bind"], cfg["ack_timeout_ms"]), ("elsewhere", ["c:*"], 500), "dead_letter set")
    cfg = Q.put_queue(s, q, bind=[])
    check_eq(cfg["bind"], [], "bind [] clears the patterns")
    # edges of the ranges are accepted
    cfg = Q.put_queue(s, q, ack_timeout_ms=100, max_attempts=1)
    check_eq((cfg["ack_timeout_ms"], cfg["max_attempts"]), (100, 1), "lower edges")
    cfg = Q.put_queue(s, q, ack_timeout_ms=3600000, max_attempts=1000)
    check_eq((cfg["ack_timeout_ms"], cfg["max_attempts"]), (3600000, 1000), "upper edges")
    # curl, as the docs would show it
    code, body = T.curl("-X", "PUT", "-H", "Content-Type: application/json", s.base + Q.qpath(q),
                        data=json.dumps({"max_attempts": 7}))
    check_eq(code, 200, "curl PUT status (body %r)" % body)
    check_eq(json.loads(body)["max_attempts"], 7, "curl PUT body")


def test_put_queue_bad_values():
    s = server()
    q = Q.qname("badcfg")
    good = Q.put_queue(s, q, max_attempts=4)
    bad = [({"ack_timeout_ms": 99}, 40000), ({"ack_timeout_ms": 3600001}, 40000), ({"ack_timeout_ms": -1}, 40000),
           ({"ack_timeout_ms": "300"}, 40000), ({"ack_timeout_ms": 300.5}, 40000),
           ({"max_attempts": 0}, 40000), ({"max_attempts": 1001}, 40000), ({"max_attempts": "5"}, 40000),
           ({"max_attempts": True}, 40000),
           ({"dead_letter": ""}, (40000, 40001)), ({"dead_letter": "$reserved"}, (40000, 40001)),
           ({"dead_letter": "has space"}, (40000, 40001)), ({"dead_letter": "x" * 251}, (40000, 40001)),
           ({"dead_letter": 5}, 40000),
           ({"bind": "orders:*"}, 40000), ({"bind": [5]}, 40000), ({"bind": ["a*b"]}, (40000, 40001)),
           ({"bind": [""]}, (40000, 40001))]
    for body, code in bad:
        status, _, resp = s.http("PUT", Q.qpath(q), body=body)
        T.check_rest_error(status, resp, code, "PUT %r" % (body,))
    for raw in ["{", "[1]", "42", "null", "not json"]:
        status, _, resp = s.http("PUT", Q.qpath(q), raw=raw)
        T.check_rest_error(status, resp, 40000, "PUT raw %r" % raw)
    after = Q.put_queue(s, q)
    check_eq(after, good, "refused PUTs changed nothing")


def test_enqueue_single_and_batch_then_pull():
    s = server()
    q = Q.qname("batch")
    one = Q.enqueue_rest(s, q, {"data": {"single": True}})
    many = Q.enqueue_rest(s, q, [{"data": i} for i in range(10)])
    ids = [one[0]["id"]] + [m["id"] for m in many]
    check_eq(len(set(ids)), 11, "distinct ids")
    Q.wait_counts(s, q, (11, 0, 0))
    got = Q.pull(s, q)  # max defaults to 1
    check_eq(len(got), 1, "pull without max returns one")
    check_eq((got[0]["id"], got[0]["data"], got[0]["attempt"]), (ids[0], {"single": True}, 1), "first pulled")
    rest = Q.pull(s, q, max_n=100)
    check_eq([(d["id"], d["data"]) for d in rest], list(zip(ids[1:], range(10))), "pull max 100 gets the other ten in order")
    Q.wait_counts(s, q, (0, 11, 0))
    check_eq(len(set(d["delivery_id"] for d in got + rest)), 11, "distinct delivery ids")
    Q.ack_rest_ok(s, q, [d["delivery_id"] for d in got + rest])
    Q.wait_counts(s, q, (0, 0, 0))
    check_eq(Q.pull(s, q, max_n=5, wait_ms=0), [], "pull on an empty queue with wait_ms 0")
    # the largest max and wait_ms are accepted, and ready work comes at once
    Q.enqueue_rest(s, q, [{"data": "edge"}])
    t0 = time.monotonic()
    edge = Q.pull(s, q, max_n=1000, wait_ms=30000)
    check_eq([d["data"] for d in edge], ["edge"], "max 1000, wait_ms 30000")
    check(time.monotonic() - t0 < 10, "ready work is answered at once, not after wait_ms")
    Q.ack_rest_ok(s, q, [edge[0]["delivery_id"]])


def test_enqueue_with_curl_base64_and_idempotency():
    s = server()
    q = Q.qname("curl")
    code, body = T.curl("-H", "Content-Type: application/json", s.base + Q.qpath(q, "/messages"),
                        data='{"data":"aGVsbG8=","encoding":"base64","idempotency_key":"k"}')
    check_eq(code, 201, "curl enqueue status (body %r)" % body)
    first = json.loads(body)["messages"][0]["id"]
    again = Q.enqueue_rest(s, q, {"data": "aGVsbG8=", "encoding": "base64", "idempotency_key": "k"})
    check_eq(again[0]["id"], first, "same idempotency key: same id")
    Q.wait_counts(s, q, (1, 0, 0))
    d = Q.pull(s, q, max_n=10)
    check_eq(len(d), 1, "enqueued once")
    check_eq((d[0]["data"], d[0].get("encoding")), ("aGVsbG8=", "base64"), "pulled delivery carries encoding")
    Q.ack_rest_ok(s, q, [d[0]["delivery_id"]])


async def test_long_poll_returns_as_soon_as_work_arrives():
    s = server()
    q = Q.qname("longpoll")
    t0 = time.monotonic()
    fut = asyncio.ensure_future(Q.in_thread(Q.pull, s, q, max_n=10, wait_ms=20000))
    await asyncio.sleep(1.0)
    check(not fut.done(), "pull waits while the queue is empty", fut.done() and fut.result())
    p = await Q.connect(s)
    r = await p.enqueue(q, "wake up")
    t_enq = time.monotonic()
    got = await asyncio.wait_for(fut, T.WAIT_S + 25)
    t_back = time.monotonic()
    check_eq([(d["id"], d["data"]) for d in got], [(r["id"], "wake up")], "the long-poll returns the new message")
    # Bounded loosely (ASan, busy box) but far under the 20 s wait.
    check(t_back - t_enq < 5.0, "returned %.2fs after the enqueue, not after wait_ms" % (t_back - t_enq))
    check(t_back - t0 >= 0.9, "and not before the enqueue")
    Q.ack_rest_ok(s, q, [got[0]["delivery_id"]])
    await p.close()


def test_long_poll_empty_after_wait_ms():
    s = server()
    q = Q.qname("lpempty")
    t0 = time.monotonic()
    got = Q.pull(s, q, max_n=5, wait_ms=600)
    el = time.monotonic() - t0
    check_eq(got, [], "empty after wait_ms")
    check(el >= 0.5, "waited about wait_ms (%.2fs)" % el)


async def test_long_poll_and_ws_consumer_compete_without_duplicates():
    s = server()
    q = Q.qname("lpcompete")
    c = await Q.connect(s)
    await c.consume(q, prefetch=1)
    p = await Q.connect(s)
    fut = asyncio.ensure_future(Q.in_thread(Q.pull, s, q, max_n=1, wait_ms=15000))
    await asyncio.sleep(0.5)
    ids = [(await p.enqueue(q, i))["id"] for i in range(2)]
    pulled = await asyncio.wait_for(fut, T.WAIT_S + 20)
    f = await c.delivery(q)
    check_eq(len(pulled), 1, "the long-poll got one")
    check_eq(sorted([pulled[0]["id"], f["id"]]), sorted(ids), "each message went to exactly one of them")
    Q.ack_rest_ok(s, q, [pulled[0]["delivery_id"]])
    await c.ack(q, f["delivery_id"])
    check_eq(await c.quiet(q), [], "no duplicate")
    await c.close()
    await p.close()


async def test_two_long_polls_one_message():
    """Two pulls wait on one queue; one message comes: exactly one of them gets
    it, the other returns empty after its wait_ms."""
    s = server()
    q = Q.qname("lptwo")
    f1 = asyncio.ensure_future(Q.in_thread(Q.pull, s, q, max_n=5, wait_ms=3000))
    f2 = asyncio.ensure_future(Q.in_thread(Q.pull, s, q, max_n=5, wait_ms=3000))
    await asyncio.sleep(0.5)
    ids = [m["id"] for m in Q.enqueue_rest(s, q, {"data": "only one"})]
    r1, r2 = await asyncio.wait_for(asyncio.gather(f1, f2), T.WAIT_S + 10)
    got = r1 + r2
    check_eq([d["id"] for d in got], ids, "exactly one of the two long-polls got the message", r1, r2)
    Q.ack_rest_ok(s, q, [got[0]["delivery_id"]])


def test_pulled_delivery_runs_under_ack_timeout():
    s = server()
    q = Q.qname("pulltimeout")
    Q.put_queue(s, q, ack_timeout_ms=1500)  # room for a slow (ASan) second pull
    Q.enqueue_rest(s, q, {"data": "x"})
    d1 = Q.pull(s, q)
    check_eq(Q.pull(s, q, wait_ms=0), [], "not pullable again while its delivery runs")
    d2 = Q.pull(s, q, wait_ms=10000)
    check_eq((d2[0]["id"], d2[0]["attempt"]), (d1[0]["id"], 2), "pulled again after the ack timeout, attempt 2")
    check(d2[0]["delivery_id"] != d1[0]["delivery_id"], "a new delivery id")
    status, _, body = Q.ack_rest(s, q, [d1[0]["delivery_id"]])
    T.check_rest_error(status, body, 40400, "ack of the timed-out pull")
    Q.ack_rest_ok(s, q, [d2[0]["delivery_id"]])
    Q.wait_counts(s, q, (0, 0, 0))


async def test_long_poll_abandoned_by_its_client_does_not_swallow_work():
    """A pull whose HTTP client went away before work arrived must not take the
    next message for the ack timeout (30 s by default): the next pull gets it
    at once."""
    import socket as _socket
    s = server()
    q = Q.qname("lpgone")
    body = b'{"max":1,"wait_ms":20000}'
    sk = _socket.create_connection((T.HOST, s.port), timeout=T.WAIT_S)
    sk.sendall(b"POST " + Q.qpath(q, "/pull").encode() + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               b"Content-Type: application/json\r\nContent-Length: " + str(len(body)).encode() +
               b"\r\n\r\n" + body)
    await asyncio.sleep(0.5)
    sk.close()  # gone before any work arrived
    await asyncio.sleep(0.5)
    r = Q.enqueue_rest(s, q, {"data": "for a live client"})
    t0 = time.monotonic()
    got = Q.pull(s, q, max_n=1, wait_ms=10000)
    el = time.monotonic() - t0
    check_eq([d["id"] for d in got], [r[0]["id"]], "the live pull gets the message (after %.2fs)" % el)
    check(el < 8, "well before the ack timeout (%.2fs)" % el)
    Q.ack_rest_ok(s, q, [got[0]["delivery_id"]])
    Q.wait_counts(s, q, (0, 0, 0))


async def test_delivery_ids_valid_across_transports():
    s = server()
    q = Q.qname("cross")
    Q.enqueue_rest(s, q, [{"data": "rest-1"}, {"data": "rest-2"}, {"data": "rest-3"}])
    pulled = Q.pull(s, q, max_n=2)
    w = await Q.connect(s)  # not a consumer of q: a delivery id is still valid here
    await w.ack(q, pulled[0]["delivery_id"])
    await w.nack(q, pulled[1]["delivery_id"], requeue=True)
    await w.consume(q, prefetch=5)
    got = await w.deliveries(q, 2)
    check_eq([(g["data"], g["attempt"]) for g in got], [("rest-2", 2), ("rest-3", 1)],
             "the REST delivery nacked over WebSocket comes back at the head")
    Q.ack_rest_ok(s, q, [got[0]["delivery_id"]])
    Q.ack_rest_ok(s, q, [got[1]["delivery_id"]], verb="nack", requeue=False)
    Q.wait_counts(s, q, (0, 0, 1))
    Q.wait_counts(s, q + ".dlq", (1, 0, 0))
    await w.error("ack", 40400, "ack of a REST-acked delivery over WebSocket", queue=q,
                  delivery_id=pulled[0]["delivery_id"])
    await w.close()


def test_rest_nack_requeue_default_true():
    s = server()
    q = Q.qname("restnack")
    Q.enqueue_rest(s, q, [{"data": 1}, {"data": 2}])
    d = Q.pull(s, q)
    Q.ack_rest_ok(s, q, [d[0]["delivery_id"]], verb="nack")
    d2 = Q.pull(s, q)
    check_eq((d2[0]["data"], d2[0]["attempt"]), (1, 2), "nack without requeue field requeues at the head")
    Q.ack_rest_ok(s, q, [d2[0]["delivery_id"]], verb="nack", requeue=True)
    d3 = Q.pull(s, q)
    check_eq((d3[0]["data"], d3[0]["attempt"]), (1, 3), "requeue true")
    Q.ack_rest_ok(s, q, [d3[0]["delivery_id"]])
    d4 = Q.pull(s, q)
    Q.ack_rest_ok(s, q, [d4[0]["delivery_id"]])
    check_eq(d4[0]["data"], 2, "then the next")


def test_rest_ack_unknown_and_stale_ids():
    s = server()
    q = Q.qname("restack")
    Q.enqueue_rest(s, q, [{"data": 1}, {"data": 2}])
    d = Q.pull(s, q, max_n=2)
    good, other = d[0]["delivery_id"], d[1]["delivery_id"]
    bogus = "no-such-delivery-id"
    status, _, body = Q.ack_rest(s, q, [good, bogus])
    T.check_rest_error(status, body, 40400, "ack with one unknown id")
    check(bogus in json.dumps(body), "the error names the unknown id", body)
    Q.wait_counts(s, q, (0, 1, 0))  # the known one was still settled
    status, _, body = Q.ack_rest(s, q, [good])
    T.check_rest_error(status, body, 40400, "ack twice")
    check(good in json.dumps(body), "the error names the stale id", body)
    status, _, body = Q.ack_rest(s, q, [bogus], verb="nack")
    T.check_rest_error(status, body, 40400, "nack of an unknown id")
    # nack with one known and one unknown id: 404 naming the unknown, the known one settled
    Q.enqueue_rest(s, q, [{"data": 3}])
    d3 = Q.pull(s, q)
    status, _, body = Q.ack_rest(s, q, [d3[0]["delivery_id"], bogus + "2"], verb="nack", requeue=False)
    T.check_rest_error(status, body, 40400, "nack with one unknown id")
    check(bogus + "2" in json.dumps(body), "the error names the unknown id", body)
    Q.wait_counts(s, q + ".dlq", (1, 0, 0))
    # A delivery id of queue q is unknown to another queue
    status, _, body = Q.ack_rest(s, Q.qname("otherq"), [other])
    T.check_rest_error(status, body, 40400, "ack on the wrong queue")
    Q.ack_rest_ok(s, q, [other])
    Q.wait_counts(s, q, (0, 0, 0))


def test_rest_bad_pull_and_ack_bodies():
    s = server()
    q = Q.qname("restbad")
    for body in [{"max": 0}, {"max": 1001}, {"max": "5"}, {"max": 1.5}, {"wait_ms": -1}, {"wait_ms": 30001},
                 {"wait_ms": "100"}, [1], "x", 42]:
        status, _, resp = s.http("POST", Q.qpath(q, "/pull"), body=body)
        T.check_rest_error(status, resp, 40000, "pull %r" % (body,))
    for raw in ["{", "not json"]:
        status, _, resp = s.http("POST", Q.qpath(q, "/pull"), raw=raw)
        T.check_rest_error(status, resp, 40000, "pull raw %r" % raw)
    for verb in ("ack", "nack"):
        for body in [{}, {"delivery_ids": "abc"}, {"delivery_ids": [1, 2]}, {"delivery_ids": None}, [], "x"]:
            status, _, resp = s.http("POST", Q.qpath(q, "/" + verb), body=body)
            T.check_rest_error(status, resp, 40000, "%s %r" % (verb, body))
    status, _, resp = s.http("POST", Q.qpath(q, "/nack"), body={"delivery_ids": ["x"], "requeue": "yes"})
    T.check_rest_error(status, resp, 40000, "nack with requeue a string")
    for body in [{}, {"dat": 1}, [{"data": 1}, {"nodata": 2}], "x", 5, [5]]:
        status, _, resp = s.http("POST", Q.qpath(q, "/messages"), body=body)
        T.check_rest_error(status, resp, 40000, "enqueue %r" % (body,))
    status, _, resp = s.http("POST", Q.qpath(q, "/messages"), body={"data": "!!", "encoding": "base64"})
    T.check_rest_error(status, resp, 40000, "enqueue bad base64")
    Q.wait_counts(s, q, (0, 0, 0))  # a refused batch enqueues nothing


def test_rest_bad_queue_names():
    s = server()
    names = ["$reserved", "has space", "tab\there", "x" * 251, "nbsp\u00a0x", "zw\u200bsp", "ctl\x01"]
    for name in names:
        for method, tail, body in [("GET", "", None), ("PUT", "", {}), ("POST", "/messages", {"data": 1}),
                                   ("POST", "/pull", {}), ("POST", "/ack", {"delivery_ids": ["x"]})]:
            status, _, resp = s.http(method, Q.qpath(name, tail), body=body)
            T.check_rest_error(status, resp, 40001, "%s %r%s" % (method, name, tail))
    # 250 bytes is the longest queue name
    long_ok = ("L%d-" % time.time_ns()).ljust(250, "x")
    Q.enqueue_rest(s, long_ok, {"data": 1})
    Q.wait_counts(s, long_ok, (1, 0, 0))
    d = Q.pull(s, long_ok)
    Q.ack_rest_ok(s, long_ok, [d[0]["delivery_id"]])


def test_percent_encoded_queue_names_are_the_same():
    s = server()
    q = "ns:" + Q.qname("pct") + ":ünï"
    Q.enqueue_rest(s, q, {"data": "x"})
    status, _, body = s.http("GET", "/v1/queues/" + q.replace("ü", "%C3%BC").replace("ï", "%C3%AF"))
    check_eq((status, body.get("ready")), (200, 1), "raw ':' and percent-encoded UTF-8")
    check_eq(Q.info(s, q)["ready"], 1, "fully percent-encoded")
    d = Q.pull(s, q)
    Q.ack_rest_ok(s, q, [d[0]["delivery_id"]])


def test_queue_info_content_type_and_method():
    s = server()
    q = Q.qname("ct")
    status, headers, body = s.http("GET", Q.qpath(q))
    ct = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    check("application/json" in ct, "queue info is application/json", ct)
    status, _, body = s.http("GET", Q.qpath(q, "/nosuch"))
    T.check_rest_error(status, body, 40400, "unknown queue sub-path")


def test_zz_server_exits_cleanly():
    SHARED.finish()


if __name__ == "__main__":
    try:
        T.main(globals())
    finally:
        SHARED.cleanup()
