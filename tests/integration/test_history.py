"""History: subscribe with rewind and from_seq (history first, then live, no
gap, no duplicate), history frames equal the live ones, and retention keeps
at least what the configuration promises (last N messages OR younger than
the age limit)."""

import asyncio
import time

import ternlib as T
from ternlib import Client, check, check_eq

SHARED = T.Shared()


def server():
    return SHARED.get()


async def seeded(n):
    """A channel with n messages (data = seq) and the live frames a subscriber saw."""
    s = server()
    ch = "hist:%d" % time.time_ns()
    sub = await Client.connect(s)
    await sub.subscribe(ch)
    pub = await Client.connect(s)
    for i in range(1, n + 1):
        r = await pub.publish(ch, i, **({"name": "odd"} if i % 2 else {}))
        check_eq(r["seq"], i, "seed seq")
    live = await sub.messages(ch, n)
    await sub.close()
    return s, ch, pub, {m["seq"]: m for m in live}


async def subscribe_and_read(s, ch, expect_seqs, **opts):
    c = await Client.connect(s)
    r = await c.subscribe(ch, **opts)
    got = []
    for _ in expect_seqs:
        got.append(await c.message(ch))
    await c.sync()
    extra = [f for f in c.backlog if f.get("op") == "message"]
    check_eq([m["seq"] for m in got] + [m["seq"] for m in extra], list(expect_seqs),
             "history for subscribe %r" % (opts,))
    return c, r, got


async def test_rewind():
    s, ch, pub, live = await seeded(20)
    c, r, got = await subscribe_and_read(s, ch, range(16, 21), rewind=5)
    check_eq(r["seq"], 20, "ok seq = last seq")
    for m in got:
        check_eq(m, live[m["seq"]], "history frame equals the live frame (seq %d)" % m["seq"])
    p = await pub.publish(ch, "live")
    m = await c.message(ch)
    check_eq((m["seq"], m["data"]), (p["seq"], "live"), "live follows history")
    await c.close()
    c, r, _ = await subscribe_and_read(s, ch, range(1, 22), rewind=1000)
    await c.close()
    c, r, _ = await subscribe_and_read(s, ch, [], rewind=0)
    check_eq(r["seq"], 21, "rewind 0: ok with last seq, no history")
    await c.close()
    c, _, _ = await subscribe_and_read(s, ch, [21], rewind=1)
    await c.close()
    await pub.close()


async def test_from_seq():
    s, ch, pub, live = await seeded(20)
    c, r, got = await subscribe_and_read(s, ch, range(16, 21), from_seq=15)
    check_eq(r["seq"], 20, "ok seq = last seq")
    for m in got:
        check_eq(m, live[m["seq"]], "history frame equals the live frame (seq %d)" % m["seq"])
    await c.close()
    c, _, _ = await subscribe_and_read(s, ch, range(1, 21), from_seq=0)
    await c.close()
    c, _, _ = await subscribe_and_read(s, ch, [], from_seq=20)
    p = await pub.publish(ch, "next")
    m = await c.message(ch)
    check_eq(m["seq"], 21, "from_seq = last: only live messages")
    await c.close()
    await pub.close()


async def test_rewind_and_from_seq_on_empty_channel():
    s = server()
    ch = "hist-empty:%d" % time.time_ns()
    for opts in ({"rewind": 10}, {"from_seq": 0}, {"from_seq": 5}):
        c, r, _ = await subscribe_and_read(s, ch, [], **opts)
        check_eq(r["seq"], 0, "ok seq on an empty channel with %r" % (opts,))
        await c.close()


async def test_resubscribe_from_seq_after_disconnect_misses_nothing():
    """The client-side recovery the contract promises: come back with from_seq."""
    s = server()
    ch = "hist-resume:%d" % time.time_ns()
    c = await Client.connect(s)
    await c.subscribe(ch)
    pub = await Client.connect(s)
    for i in range(5):
        await pub.publish(ch, i)
    seen = await c.messages(ch, 5)
    await c.close()
    for i in range(5, 12):
        await pub.publish(ch, i)
    c2 = await Client.connect(s)
    await c2.subscribe(ch, from_seq=seen[-1]["seq"])
    publishing = asyncio.ensure_future(asyncio.gather(*[pub.publish(ch, 100 + i) for i in range(1)]))
    got = await c2.messages(ch, 8)
    await publishing
    check_eq([m["seq"] for m in got], list(range(6, 14)), "resumed subscriber sees 6..13 once each")
    await c2.close()
    await pub.close()


async def test_default_retention_keeps_at_least_1000():
    s = server()
    ch = "hist-1000:%d" % time.time_ns()
    loop = asyncio.get_running_loop()
    n = 1200
    for b in range(n // 100):
        await loop.run_in_executor(None, s.publish_rest, ch, [{"data": b * 100 + i + 1} for i in range(100)])
    hist = s.full_history(ch)
    seqs = [m["seq"] for m in hist]
    check(len(seqs) >= 1000, "REST history keeps at least 1000 (has %d)" % len(seqs))
    check_eq(seqs, list(range(seqs[0], n + 1)), "retained history is contiguous up to the last")
    c, _, got = await subscribe_and_read(s, ch, range(n - 999, n + 1), rewind=1000)
    check_eq([m["data"] for m in got], list(range(n - 999, n + 1)), "rewind 1000 returns the last 1000")
    await c.close()


async def test_retention_count_or_age():
    """history_max_messages 10 and history_max_age_s 2: a message stays while it
    is among the last 10 OR younger than 2 s, so 30 fresh ones are all there;
    after they age, at least the last 10 still are."""
    with T.Server(config={"history_max_messages": 10, "history_max_age_s": 2}) as s:
        ch = "hist-cfg:%d" % time.time_ns()
        s.publish_rest(ch, [{"data": i} for i in range(1, 31)])
        hist = s.full_history(ch)
        check_eq([m["seq"] for m in hist], list(range(1, 31)), "30 messages younger than the age limit are kept")
        await asyncio.sleep(3.5)
        s.publish_rest(ch, {"data": 31})
        hist = s.full_history(ch)
        seqs = [m["seq"] for m in hist]
        check(len(seqs) >= 10, "at least the last 10 kept after aging", seqs)
        check_eq(seqs, list(range(seqs[0], 32)), "what is kept is contiguous and ends at the last")
        c = await Client.connect(s)
        await c.subscribe(ch, rewind=10)
        got = await c.messages(ch, 10)
        check_eq([m["seq"] for m in got], list(range(22, 32)), "rewind 10 after aging")
        await c.close()
        print("  retained after aging: %d of 31" % len(seqs))


def test_zz_server_exits_cleanly():
    """Last: the shared server stops on SIGTERM with exit code 0 and never crashed."""
    SHARED.finish()


if __name__ == "__main__":
    try:
        T.main(globals())
    finally:
        SHARED.cleanup()
