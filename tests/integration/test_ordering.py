"""Ordering with several concurrent publishers: every subscriber sees every
message of the channel in seq order, seq 1, 2, 3... with no gap and no
duplicate, the data at each seq is what its publisher was told, and
subscribers that join mid-stream (plain, rewind, from_seq) see a gapless
continuation from the point they asked for."""

import asyncio
import time

import ternlib as T
from ternlib import Client, check, check_eq

WS_PUBLISHERS = 4
PER_PUBLISHER = 100
REST_BATCHES = 10
REST_BATCH = 10
TOTAL = WS_PUBLISHERS * PER_PUBLISHER + REST_BATCHES * REST_BATCH


def check_gapless(seqs, first, last, what):
    check_eq(len(seqs), last - first + 1, what + ": count")
    for i, s in enumerate(seqs):
        if s != first + i:
            raise T.TestFailure("%s: at position %d seq %d, want %d (gap or duplicate); around: %r"
                                % (what, i, s, first + i, seqs[max(0, i - 3):i + 3]))


async def ws_publisher(s, ch, p, acked):
    c = await Client.connect(s)
    last = 0
    for n in range(PER_PUBLISHER):
        r = await c.publish(ch, {"p": p, "n": n})
        check(r["seq"] > last, "one publisher's acknowledged seqs rise", last, r["seq"])
        last = r["seq"]
        acked[r["seq"]] = ({"p": p, "n": n}, r["id"])
    await c.close()


async def rest_publisher(s, ch, acked):
    loop = asyncio.get_running_loop()
    for b in range(REST_BATCHES):
        msgs = [{"data": {"p": "rest", "n": b * REST_BATCH + i}} for i in range(REST_BATCH)]
        out = await loop.run_in_executor(None, s.publish_rest, ch, msgs)
        seqs = [o["seq"] for o in out]
        check_eq(seqs, list(range(seqs[0], seqs[0] + REST_BATCH)), "a REST batch gets consecutive seqs")
        for m, o in zip(msgs, out):
            acked[o["seq"]] = (m["data"], o["id"])


async def collect(c, ch, n, timeout):
    out = []
    deadline = time.monotonic() + timeout
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise T.TestFailure("subscriber got %d of %d messages; last seqs %r" % (len(out), n, [m["seq"] for m in out[-5:]]))
        out.append(await c.message(ch, left))
    return out


async def test_concurrent_publishers_total_order():
    with T.Server() as s:
        ch = "order:%d" % time.time_ns()
        subs = [await Client.connect(s) for _ in range(3)]
        for c in subs:
            await c.subscribe(ch)
        acked = {}
        # Late joiners subscribe while the publishers run.
        late = {}

        async def late_joiner(kind, delay):
            await asyncio.sleep(delay)
            c = await Client.connect(s)
            if kind == "plain":
                r = await c.subscribe(ch)
                start = r["seq"]
            elif kind == "rewind":
                r = await c.subscribe(ch, rewind=5)
                start = max(0, r["seq"] - 5)
            else:
                info = s.channel_info(ch)
                start = max(0, info["last_seq"] - 3)
                await c.subscribe(ch, from_seq=start)
            late[kind] = (c, start)

        publishers = [ws_publisher(s, ch, p, acked) for p in range(WS_PUBLISHERS)]
        publishers.append(rest_publisher(s, ch, acked))
        joiners = [late_joiner("plain", 0.3), late_joiner("rewind", 0.6), late_joiner("from_seq", 0.9)]
        await asyncio.wait_for(asyncio.gather(*publishers, *joiners), 300)

        check_eq(sorted(acked), list(range(1, TOTAL + 1)), "acknowledged seqs are exactly 1..%d" % TOTAL)
        for i, c in enumerate(subs):
            got = await collect(c, ch, TOTAL, 120)
            check_gapless([m["seq"] for m in got], 1, TOTAL, "subscriber %d" % i)
            for m in got:
                data, mid = acked[m["seq"]]
                if (m["data"], m["id"]) != (data, mid):
                    raise T.TestFailure("subscriber %d seq %d: got %r/%r, publisher was told %r/%r"
                                        % (i, m["seq"], m["data"], m["id"], data, mid))
            # Each WebSocket publisher's messages appear in the order it sent them.
            for p in range(WS_PUBLISHERS):
                ns = [m["data"]["n"] for m in got if m["data"]["p"] == p]
                check_eq(ns, list(range(PER_PUBLISHER)), "publisher %d's order as seen by subscriber %d" % (p, i))
            await c.sync()
            extra = [f for f in c.backlog if f.get("op") == "message"]
            check(not extra, "no message beyond the %d published" % TOTAL, extra[:3])
        for kind, (c, start) in late.items():
            got = await collect(c, ch, TOTAL - start, 120)
            check_gapless([m["seq"] for m in got], start + 1, TOTAL, "late %s subscriber from %d" % (kind, start))
            await c.close()
        hist = s.full_history(ch)
        check_gapless([m["seq"] for m in hist], 1, TOTAL, "REST history")
        for c in subs:
            await c.close()


async def test_pipelined_publishes_one_connection():
    """Many publishes in flight on one connection: each ref gets its own ok, the
    seqs are distinct and together gapless, and a subscriber sees them all."""
    with T.Server() as s:
        ch = "pipe:%d" % time.time_ns()
        sub = await Client.connect(s)
        await sub.subscribe(ch)
        pub = await Client.connect(s)
        n = 200
        for i in range(n):
            await pub.send({"op": "publish", "ref": 10 + i, "channel": ch, "data": i})
        replies = {}
        deadline = time.monotonic() + 120
        while len(replies) < n and time.monotonic() < deadline:
            f = await pub.frame(max(0.1, deadline - time.monotonic()))
            check_eq(f.get("op"), "ok", "pipelined publish reply (%r)" % (f,))
            check(f["ref"] not in replies, "one reply per ref", f)
            replies[f["ref"]] = f
        check_eq(sorted(replies), list(range(10, 10 + n)), "a reply for every ref")
        seq_of = {ref - 10: r["seq"] for ref, r in replies.items()}
        check_eq(sorted(seq_of.values()), list(range(1, n + 1)), "seqs 1..%d, each once" % n)
        got = await collect(sub, ch, n, 120)
        check_gapless([m["seq"] for m in got], 1, n, "subscriber of pipelined publishes")
        for m in got:
            check_eq(seq_of[m["data"]], m["seq"], "data %r arrived with the seq its ok named" % m["data"])
        await sub.close()
        await pub.close()


async def test_channels_are_independent():
    """Interleaved publishing on several channels: each has its own seq from 1."""
    with T.Server() as s:
        stamp = time.time_ns()
        chans = ["ind:%d:%d" % (stamp, i) for i in range(5)]
        sub = await Client.connect(s)
        for ch in chans:
            await sub.subscribe(ch)
        pubs = [await Client.connect(s) for _ in range(3)]

        async def run(k):
            for i in range(40):
                await pubs[k].publish(chans[(i + k) % len(chans)], [k, i])
        await asyncio.wait_for(asyncio.gather(*(run(k) for k in range(3))), 120)
        per = {ch: [] for ch in chans}
        for _ in range(120):
            m = await sub.message()
            per[m["channel"]].append(m["seq"])
        for ch in chans:
            check_gapless(per[ch], 1, len(per[ch]), "channel %s" % ch)
            check_eq(s.channel_info(ch)["last_seq"], len(per[ch]), "last_seq of %s" % ch)
        for c in [sub] + pubs:
            await c.close()


if __name__ == "__main__":
    T.main(globals())
