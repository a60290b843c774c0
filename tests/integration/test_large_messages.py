"""Large messages over WebSocket, 64 B up to the 64 KiB limit, in both
directions (a client sends a frame of that size, subscribers receive one), and
the delivery time grows only with the bytes.

Mosquitto 2.0.11 on Debian's libwebsockets 4.1 takes about 100 ms more per
extra 4 KiB of WebSocket frame. We assert on the shape, not on wall-clock
values: the median publish-to-delivery time at 64 KiB is at most 16x the one at
4 KiB (16x the bytes; floored at 1 ms so sub-millisecond noise cannot fail it),
and the slope from 4 KiB to 64 KiB is under 10 ms per 4 KiB step, a tenth of
that defect."""

import asyncio
import base64
import json
import statistics
import time

import ternlib as T
from ternlib import Client, check, check_eq

SIZES = [64, 256, 1024, 4096, 8192, 16384, 32768, 49152, 65536]
SAMPLES = 15
WARMUP = 3


def payload(size, tag):
    """A JSON string whose JSON text is exactly `size` bytes (the message size)."""
    body = "%s-" % tag
    return (body + "x" * size)[: size - 2]


async def round_trip(pub, sub, ch, data):
    t0 = time.perf_counter()
    await pub.send({"op": "publish", "channel": ch, "data": data})
    m = await sub.message(ch, 60)
    dt = time.perf_counter() - t0
    check_eq(len(m["data"]), len(data), "delivered length")
    check(m["data"] == data, "delivered data equals what was sent (%d bytes)" % (len(data) + 2))
    return dt


async def test_delivery_time_grows_only_with_bytes():
    with T.Server(config={"store_sync": "normal"}) as s:
        ch = "large:%d" % time.time_ns()
        pub = await Client.connect(s)
        sub = await Client.connect(s)
        await sub.subscribe(ch)
        medians = {}
        for size in SIZES:
            times = []
            for i in range(WARMUP + SAMPLES):
                dt = await round_trip(pub, sub, ch, payload(size, "%d.%d" % (size, i)))
                if i >= WARMUP:
                    times.append(dt)
            medians[size] = statistics.median(times)
        await pub.sync()
        errors = [f for f in pub.backlog if f.get("op") == "error"]
        check(not errors, "no publish failed", errors[:2])
        print("  median publish->delivery: " + ", ".join("%d B %.2f ms" % (k, v * 1000) for k, v in medians.items()))
        t4, t64 = medians[4096], medians[65536]
        slope = (t64 - t4) / 15.0
        print("  slope 4 KiB -> 64 KiB: %.3f ms per 4 KiB step; ratio %.1f" % (slope * 1000, t64 / t4))
        check(slope < 0.010, "extra time per 4 KiB step is well below Mosquitto's ~100 ms",
              "%.3f ms" % (slope * 1000))
        check(t64 <= 16 * max(t4, 0.001), "64 KiB takes at most 16x the 4 KiB time (16x the bytes)",
              "%.2f ms vs %.2f ms" % (t64 * 1000, t4 * 1000))
        # No step from one size to the next costs disproportionately (the defect's signature).
        for a, b in zip(SIZES, SIZES[1:]):
            steps = max(1.0, (b - a) / 4096.0)
            check((medians[b] - medians[a]) / steps < 0.010,
                  "step %d -> %d B adds under 10 ms per 4 KiB" % (a, b),
                  "%.2f -> %.2f ms" % (medians[a] * 1000, medians[b] * 1000))
        await pub.close()
        await sub.close()


async def test_64k_both_directions_many_subscribers():
    """A burst of 64 KiB messages fanned out to 3 subscribers, each gets every
    byte, in order; the publisher (subscribed too) gets its own back."""
    with T.Server(config={"store_sync": "normal"}) as s:
        ch = "large-fan:%d" % time.time_ns()
        subs = [await Client.connect(s) for _ in range(3)]
        for c in subs:
            await c.subscribe(ch)
        pub = await Client.connect(s)
        await pub.subscribe(ch)
        n = 40
        datas = [payload(65536, "burst%d" % i) for i in range(n)]
        t0 = time.perf_counter()
        for i, d in enumerate(datas):
            await pub.send({"op": "publish", "ref": i + 1, "channel": ch, "data": d})
        for c in subs + [pub]:
            got = await c.messages(ch, n, timeout=120)
            check_eq([m["seq"] for m in got], list(range(1, n + 1)), "all 64 KiB messages in order")
            for m, d in zip(got, datas):
                check(m["data"] == d, "64 KiB data intact at seq %d" % m["seq"])
        dt = time.perf_counter() - t0
        for i in range(n):  # an ok per publish (it may come after the fan-out)
            r = await pub.expect(lambda f, ref=i + 1: f.get("ref") == ref, what="reply to publish ref %d" % (i + 1))
            check_eq(r.get("op"), "ok", "reply to publish %d" % (i + 1))
        print("  %d x 64 KiB to 4 subscribers in %.0f ms" % (n, dt * 1000))
        for c in subs + [pub]:
            await c.close()


async def test_64k_base64_and_fragmented():
    with T.Server() as s:
        ch = "large-b64:%d" % time.time_ns()
        c = await Client.connect(s)
        await c.subscribe(ch)
        raw = bytes((i * 7 + 3) % 256 for i in range(65536))
        r = await c.publish(ch, base64.b64encode(raw).decode(), encoding="base64")
        m = await c.message(ch)
        check_eq(base64.b64decode(m["data"]), raw, "64 KiB binary via base64 round-trips")
        check_eq(m.get("encoding"), "base64", "encoding")
        # The same 64 KiB message sent as four WebSocket fragments.
        frame = json.dumps({"op": "publish", "ref": 77, "channel": ch, "data": payload(65536, "frag")})
        parts = [frame[i:i + len(frame) // 4 + 1] for i in range(0, len(frame), len(frame) // 4 + 1)]
        check(len(parts) >= 4, "sent in fragments", len(parts))
        await c.ws.send(iter(parts))
        ok = await c.expect(lambda f: f.get("ref") == 77, what="reply to the fragmented publish")
        check_eq(ok.get("op"), "ok", "fragmented 64 KiB publish accepted (%r)" % (str(ok)[:200],))
        m = await c.message(ch)
        check_eq(m["data"], payload(65536, "frag"), "fragmented message delivered whole")
        # And over REST, read back by a WebSocket subscriber and by GET.
        d = payload(65536, "rest")
        s.publish_rest(ch, {"data": d})
        m = await c.message(ch)
        check_eq(m["data"], d, "64 KiB published over REST delivered over WebSocket")
        check_eq(s.history(ch, direction="backwards", limit=1)[0]["data"], d, "64 KiB read back over REST")
        await c.close()


if __name__ == "__main__":
    T.main(globals())
