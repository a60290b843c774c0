"""Write pacing on the edge (`flush_linger_ms`): while messages arrive faster
than the edge writes them, its next flush waits flush_linger_ms so several
frames go out in one write; once it keeps up again (one frame per session per
flush) it writes at once. Checked through what clients receive (everything, in
order) and the edge's /metrics (tern_client_writes_total against
tern_messages_out_total, tern_flush_lingers_total). The linger is set long
(1 s, its maximum) so that "waited" and "did not wait" differ by far more than a loaded
machine's jitter."""

import asyncio
import time

import ternlib as T
from ternlib import Client, check, check_eq

# Lingering needs a flush that takes a millisecond or more: a few hundred
# clients (writing to a handful is never worth the latency).
SUBSCRIBERS = 300
BURST = 100
LINGER_MS = 1000


def counters(s):
    m = s.metrics()
    return (m.get("tern_client_writes_total", 0), m.get("tern_messages_out_total", 0),
            m.get("tern_flush_lingers_total", 0))


async def burst(s, subs, ch, first):
    """Publishes BURST messages in one REST batch; every subscriber gets all of
    them in seq order. Returns the seconds the slowest subscriber took."""
    loop = asyncio.get_running_loop()
    t0 = time.monotonic()
    out = await loop.run_in_executor(None, s.publish_rest, ch,
                                     [{"data": i} for i in range(BURST)])
    check_eq([o["seq"] for o in out], list(range(first, first + BURST)), "burst seqs")

    async def drain(c):
        got = await c.messages(ch, BURST, timeout=60)
        check_eq([m["seq"] for m in got], list(range(first, first + BURST)),
                 "a subscriber gets the whole burst in order")
        check_eq([m["data"] for m in got], list(range(BURST)), "burst data")
    await asyncio.gather(*(drain(c) for c in subs))
    return time.monotonic() - t0


async def lone(s, pub, subs, ch, n):
    """Publishes one message; returns the seconds until every subscriber had it."""
    t0 = time.monotonic()
    r = await pub.publish(ch, {"lone": n})
    for c in subs:
        m = await c.message(ch, timeout=10)
        check_eq(m["seq"], r["seq"], "lone message seq")
    return time.monotonic() - t0


async def test_burst_lingers_then_lone_messages_go_at_once():
    with T.Server(config={"flush_linger_ms": LINGER_MS}) as s:
        ch = "linger:%d" % time.time_ns()
        subs = [await Client.connect(s) for _ in range(SUBSCRIBERS)]
        for c in subs:
            await c.subscribe(ch)
        pub = await Client.connect(s)
        w0, f0, l0 = counters(s)

        # A burst: the edge falls behind, lingers, and batches frames per write.
        seq = 1
        for attempt in range(5):
            await burst(s, subs, ch, seq)
            seq += BURST
            w1, f1, l1 = counters(s)
            if l1 > l0:
                break
        check(l1 > l0, "a burst of %d messages to %d subscribers made the edge linger"
              % (BURST, SUBSCRIBERS), (w0, f0, l0), (w1, f1, l1))
        frames, writes = f1 - f0, w1 - w0
        check(frames >= SUBSCRIBERS * BURST, "every burst frame counted", frames)
        check(writes * 2 <= frames, "frames per write >= 2 while behind", frames, writes)

        # The first lone message may wait for the linger once; after it the edge
        # keeps up, so the next ones go out at once (well under LINGER_MS).
        await lone(s, pub, subs, ch, 0)
        took = [await lone(s, pub, subs, ch, n) for n in range(1, 4)]
        check(max(took) < LINGER_MS / 1000 / 2,
              "lone messages after the burst are not held for the linger", took)
        for c in subs + [pub]:
            await c.close()


async def test_linger_zero_never_waits():
    with T.Server(config={"flush_linger_ms": 0}) as s:
        ch = "nolinger:%d" % time.time_ns()
        subs = [await Client.connect(s) for _ in range(SUBSCRIBERS)]
        for c in subs:
            await c.subscribe(ch)
        await burst(s, subs, ch, 1)
        check_eq(counters(s)[2], 0, "flush_linger_ms 0: no flush lingers")
        for c in subs:
            await c.close()


if __name__ == "__main__":
    T.main(globals())
