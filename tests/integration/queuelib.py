"""Helpers for the durable-queue integration tests (test_queue_*.py).

Built on ternlib.py (which stays as it is): a Client subclass with the queue
ops (enqueue / consume / ack / nack / cancel and `delivery` frames), REST
helpers for /v1/queues/{q}, and checks for the shapes the contract gives:

  WebSocket  delivery frame  {"op":"delivery","queue":q,"delivery_id":..,"id":..,"data":..,"attempt":N}
             (+ "encoding" when base64, + "channel"/"name" for copies made by a binding)
  REST       PUT  /v1/queues/{q}            200 {"queue","ack_timeout_ms","max_attempts","dead_letter","bind"}
             POST /v1/queues/{q}/messages   201 {"messages":[{"id":..}]}
             POST /v1/queues/{q}/pull       200 {"deliveries":[{delivery_id,id,data,attempt}]}
             POST /v1/queues/{q}/ack|nack   200 {"acked":N} or 404/40400
             GET  /v1/queues/{q}            200 {"queue","ready","unacked","consumers"}

Every wait is bounded (ternlib.WAIT_S, generous for ASan builds).
"""

import asyncio
import concurrent.futures
import time

import ternlib as T
from ternlib import Client, check, check_eq, quote

_counter = [0]


def qname(prefix="q"):
    """A queue (or channel) name no other test of the run uses."""
    _counter[0] += 1
    return "%s-%d-%d" % (prefix, time.time_ns() % 10 ** 12, _counter[0])


def check_delivery(f, queue, what, attempt=None, data="absent"):
    """A `delivery` frame (or a REST delivery when queue is None) as the contract defines it."""
    check(isinstance(f, dict), what + ": delivery is an object", f)
    if queue is not None:
        check_eq(f.get("op"), "delivery", what + ": op")
        check_eq(f.get("queue"), queue, what + ": queue")
    check(isinstance(f.get("delivery_id"), str) and f["delivery_id"] != "",
          what + ": delivery_id is a non-empty string", f)
    check(isinstance(f.get("id"), str) and f["id"] != "", what + ": id is a non-empty string", f)
    check("data" in f, what + ": has data", f)
    check(isinstance(f.get("attempt"), int) and not isinstance(f.get("attempt"), bool) and f["attempt"] >= 1,
          what + ": attempt is an int >= 1", f)
    if attempt is not None:
        check_eq(f["attempt"], attempt, what + ": attempt (frame %r)" % (f,))
    if data != "absent":
        check_eq(f["data"], data, what + ": data")
    return f


class QClient(Client):
    """ternlib.Client plus the queue ops."""

    async def enqueue(self, queue, data, **opts):
        r = await self.ok("enqueue", queue=queue, data=data, **opts)
        check(isinstance(r.get("id"), str) and r["id"], "enqueue ok carries a non-empty id", r)
        return r

    async def consume(self, queue, **opts):
        return await self.ok("consume", queue=queue, **opts)

    async def ack(self, queue, delivery_id):
        return await self.ok("ack", queue=queue, delivery_id=delivery_id)

    async def nack(self, queue, delivery_id, **opts):
        return await self.ok("nack", queue=queue, delivery_id=delivery_id, **opts)

    async def cancel(self, queue):
        return await self.ok("cancel", queue=queue)

    async def delivery(self, queue=None, timeout=T.WAIT_S, pred=None):
        return await self.expect(
            lambda f: f.get("op") == "delivery" and (queue is None or f.get("queue") == queue)
            and (pred is None or pred(f)),
            timeout, "delivery on %r" % (queue,))

    async def deliveries(self, queue, n, timeout=T.WAIT_S):
        out = []
        deadline = time.monotonic() + timeout
        for _ in range(n):
            out.append(await self.delivery(queue, max(0.1, deadline - time.monotonic())))
        return out

    def pending(self, queue=None):
        """Delivery frames already received and not yet taken (after sync())."""
        return [f for f in self.backlog if f.get("op") == "delivery" and (queue is None or f.get("queue") == queue)]

    async def quiet(self, queue, settle_s=0.3):
        """Proves no delivery of `queue` is waiting for us: round trip, a short
        settle, round trip. Returns the stray deliveries (should be [])."""
        await self.sync()
        await asyncio.sleep(settle_s)
        await self.sync()
        return self.pending(queue)


async def connect(s, **kw):
    return await QClient.connect(s, **kw)


# --------------------------------------------------------------------------- REST

def qpath(q, tail=""):
    return "/v1/queues/%s%s" % (quote(q), tail)


def put_queue(s, q, **cfg):
    status, _, body = s.http("PUT", qpath(q), body=cfg)
    check_eq(status, 200, "PUT %s %r status (body %r)" % (q, cfg, body))
    check(isinstance(body, dict), "PUT body is an object", body)
    return body


def enqueue_rest(s, q, msgs):
    status, _, body = s.http("POST", qpath(q, "/messages"), body=msgs)
    check_eq(status, 201, "POST %s/messages status (body %r)" % (q, body))
    check(isinstance(body, dict) and isinstance(body.get("messages"), list), "201 body has messages", body)
    n = len(msgs) if isinstance(msgs, list) else 1
    check_eq(len(body["messages"]), n, "one id per enqueued message")
    for m in body["messages"]:
        check(isinstance(m.get("id"), str) and m["id"], "enqueued message has an id", m)
    return body["messages"]


def pull(s, q, max_n=None, wait_ms=None, timeout=None):
    req = {}
    if max_n is not None:
        req["max"] = max_n
    if wait_ms is not None:
        req["wait_ms"] = wait_ms
    t = timeout if timeout is not None else T.WAIT_S + (wait_ms or 0) / 1000.0
    status, _, body = s.http("POST", qpath(q, "/pull"), body=req, timeout=t)
    check_eq(status, 200, "POST %s/pull %r status (body %r)" % (q, req, body))
    check(isinstance(body, dict) and isinstance(body.get("deliveries"), list), "pull body has deliveries", body)
    for d in body["deliveries"]:
        check_delivery(d, None, "pulled delivery")
    return body["deliveries"]


def ack_rest(s, q, ids, verb="ack", **extra):
    body = {"delivery_ids": list(ids)}
    body.update(extra)
    return s.http("POST", qpath(q, "/" + verb), body=body)


def ack_rest_ok(s, q, ids, verb="ack", **extra):
    status, _, body = ack_rest(s, q, ids, verb, **extra)
    check_eq(status, 200, "POST %s/%s status (body %r)" % (q, verb, body))
    check_eq(body, {"acked": len(ids)}, "%s answer" % verb)
    return body


def info(s, q):
    status, _, body = s.http("GET", qpath(q))
    check_eq(status, 200, "GET %s status (body %r)" % (q, body))
    for k in ("ready", "unacked", "consumers"):
        check(isinstance(body.get(k), int), "queue info %s is an int" % k, body)
    check_eq(body.get("queue"), q, "queue info names the queue")
    return body


def counts(s, q):
    b = info(s, q)
    return (b["ready"], b["unacked"], b["consumers"])


def wait_counts(s, q, want, timeout=T.WAIT_S):
    """Polls GET /v1/queues/{q} until (ready, unacked, consumers) == want."""
    deadline = time.monotonic() + timeout
    got = counts(s, q)
    while got != want and time.monotonic() < deadline:
        time.sleep(0.05)
        got = counts(s, q)
    check_eq(got, want, "queue %s (ready, unacked, consumers)" % q)
    return got


async def await_counts(s, q, want, timeout=T.WAIT_S):
    """wait_counts without blocking the event loop for long."""
    deadline = time.monotonic() + timeout
    got = counts(s, q)
    while got != want and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        got = counts(s, q)
    check_eq(got, want, "queue %s (ready, unacked, consumers)" % q)
    return got


_pool = concurrent.futures.ThreadPoolExecutor(max_workers=4)


async def in_thread(fn, *args, **kw):
    """Runs a blocking REST helper without stopping the event loop (long-poll)."""
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_pool, lambda: fn(*args, **kw))


async def drain(c, q, max_n=100000, idle_s=1.5, ack=True, prefetch=100):
    """Consumes `q` on client c (already consuming or not) until nothing arrives
    for idle_s; acks each delivery (with ref) if ack. Returns the frames."""
    out = []
    for _ in range(max_n):
        try:
            f = await c.delivery(q, timeout=idle_s)
        except T.TestFailure:
            break
        out.append(f)
        if ack:
            await c.ack(q, f["delivery_id"])
    return out


def queue_metric(m, name, q):
    return m.get('%s{queue="%s"}' % (name, q))
