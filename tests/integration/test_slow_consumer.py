"""Slow consumer: a subscriber that stops reading is disconnected with an
error frame and then close code 4008, never silently skipped (what it did get
is a gapless prefix), while another subscriber on the same channel keeps
receiving everything; the slow one comes back with from_seq and misses nothing."""

import asyncio
import json
import random
import time

import ternlib as T
from ternlib import Client, RawWS, check, check_eq

QUEUE_BYTES = 262144
MSG_CHARS = 16 * 1024 - 2  # 16 KiB of data per message
MAX_PUBLISH = 2500         # ~40 MB: far beyond socket buffers + the session bound


def read_until_close(raw, max_frames=100000):
    """All frames up to the close frame: (texts, close payload or None on EOF)."""
    frames = []
    for _ in range(max_frames):
        try:
            kind, payload = raw.recv_message()
        except EOFError:
            return frames, None
        if kind == "close":
            return frames, payload
        if kind == "text":
            frames.append(json.loads(payload))
    raise T.TestFailure("no close frame after %d frames" % max_frames)


def raw_subscriber(port, ch):
    """A raw client with a tiny receive buffer, subscribed to ch."""
    raw = RawWS(port, rcvbuf=4096)
    kind, first = raw.recv_message()
    check_eq(json.loads(first).get("op"), "connected", "raw client's first frame")
    raw.send_json({"op": "subscribe", "channel": ch, "ref": 1})
    kind, reply = raw.recv_message()
    check_eq(json.loads(reply).get("op"), "ok", "raw client subscribed")
    return raw


async def test_slow_consumer_closed_4008_others_unaffected():
    with T.Server(config={"session_queue_max_bytes": QUEUE_BYTES}) as s:
        ch = "slow:%d" % time.time_ns()
        # The slow one: a raw socket with a tiny receive buffer that stops reading.
        slow = raw_subscriber(s.port, ch)

        fast = await Client.connect(s)
        await fast.subscribe(ch)
        fast_got = []

        async def fast_reader():
            while True:
                m = await fast.message(ch, 120)
                fast_got.append(m["seq"])

        reader = asyncio.ensure_future(fast_reader())
        pub = await Client.connect(s)
        payload = "s" * MSG_CHARS
        published = 0
        closed_at = None
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + 240
        while published < MAX_PUBLISH and time.monotonic() < deadline:
            await pub.publish(ch, {"n": published, "pad": payload})
            published += 1
            if published % 10 == 0:
                m = await loop.run_in_executor(None, s.metrics)
                if T.metric(m, "tern_slow_consumer_closes_total") >= 1:
                    closed_at = published
                    break
        check(closed_at is not None, "the server closed the slow consumer within %d messages of 16 KiB "
              "(session_queue_max_bytes %d)" % (published, QUEUE_BYTES))
        # Start reading the slow one right away (a server may bound how long it
        # waits to deliver the close), while others keep receiving.
        slow.sock.settimeout(60)
        slow_read = loop.run_in_executor(None, read_until_close, slow)
        for i in range(20):
            await pub.publish(ch, {"n": published, "pad": "after"})
            published += 1
        t_end = time.monotonic() + 120
        while len(fast_got) < published and time.monotonic() < t_end:
            await asyncio.sleep(0.05)
        reader.cancel()
        check_eq(fast_got, list(range(1, published + 1)), "the fast subscriber got every message in order")
        t_end = time.monotonic() + 15
        while s.channel_info(ch)["subscribers"] != 1 and time.monotonic() < t_end:
            await asyncio.sleep(0.1)
        check_eq(s.channel_info(ch)["subscribers"], 1, "the slow consumer is no longer subscribed")

        # What the slow one was sent: a gapless prefix, an error frame, then close 4008.
        frames, close_payload = await asyncio.wait_for(slow_read, 120)
        after_close = slow.answer_close(close_payload) if close_payload is not None else []
        slow.close()
        msgs = [f for f in frames if f.get("op") == "message"]
        seqs = [m["seq"] for m in msgs]
        check_eq(seqs, list(range(1, len(seqs) + 1)), "what the slow consumer got is gapless from seq 1")
        check(len(seqs) < published, "the slow consumer did not get everything (it was cut off)", len(seqs))
        errors = [i for i, f in enumerate(frames) if f.get("op") == "error"]
        check(close_payload is not None, "a close frame came (not just a dropped TCP connection); "
              "before the drop: %d messages, error frames %r" % (len(seqs), [frames[i] for i in errors]))
        code = T.close_code(close_payload)
        check_eq(code, 4008, "close code for a slow consumer (payload %r)" % (close_payload[:60],))
        check(not after_close, "a clean close handshake: nothing after the 4008 close frame (got %r)" % (after_close,))
        errors = [i for i, f in enumerate(frames) if f.get("op") == "error"]
        check(errors, "an error frame precedes the 4008 close", [f.get("op") for f in frames[-3:]])
        T.check_error(frames[errors[-1]]["error"], frames[errors[-1]]["error"].get("code"), "slow consumer error frame")
        check(all(f.get("op") != "message" for f in frames[errors[-1]:]), "no message after the error frame")
        print("  slow consumer cut after %d of %d messages; error %r" % (len(seqs), published, frames[errors[-1]]["error"]))

        # It comes back with from_seq and misses nothing history holds.
        back = await Client.connect(s)
        last_seen = seqs[-1] if seqs else 0
        await back.subscribe(ch, from_seq=last_seen)
        rest = await back.messages(ch, published - last_seen, timeout=120)
        check_eq([m["seq"] for m in rest], list(range(last_seen + 1, published + 1)), "from_seq recovery")
        m = s.metrics()
        check(T.metric(m, "tern_slow_consumer_closes_total") >= 1, "slow consumer close counted")
        for c in (fast, pub, back):
            await c.close()


async def test_slow_consumer_does_not_stall_publisher_or_other_channels():
    """While one subscriber is stuck, publishing on another channel stays
    prompt for everyone else: no head-of-line blocking across sessions."""
    with T.Server(config={"session_queue_max_bytes": QUEUE_BYTES}) as s:
        stamp = time.time_ns()
        ch_slow, ch_other = "stuck:%d" % stamp, "free:%d" % stamp
        slow = RawWS(s.port, rcvbuf=4096)
        slow.recv_message()
        slow.send_json({"op": "subscribe", "channel": ch_slow, "ref": 1})
        slow.recv_message()
        other = await Client.connect(s)
        await other.subscribe(ch_other)
        pub = await Client.connect(s)
        payload = "x" * MSG_CHARS
        for i in range(100):  # ~1.6 MB towards the stuck one
            await pub.publish(ch_slow, payload)
        for i in range(50):
            r = await pub.publish(ch_other, i)
            m = await other.message(ch_other, 30)
            check_eq((m["seq"], m["data"]), (r["seq"], i), "other channel delivered while a consumer is stuck")
        slow.close()
        for c in (other, pub):
            await c.close()



async def test_lagging_reader_gets_every_frame_whole():
    """A reader slower than the publisher: its socket fills, so the server's
    writes are cut inside frames over and over. Every message still arrives
    whole, in order, with its content, and the pongs lws writes for the
    client's pings land between frames, never inside one."""
    rng = random.Random(6)
    sizes = [rng.choice((1, 100, 4000, 4096, 20000, 65536, 70000, 300000)) + rng.randrange(0, 50)
             for _ in range(160)]
    with T.Server(config={"session_queue_max_bytes": 64 * 1024 * 1024,
                          "max_message_bytes": 1024 * 1024}) as s:
        ch = "lag:%d" % time.time_ns()
        raw = raw_subscriber(s.port, ch)
        pub = await Client.connect(s)
        for i, n in enumerate(sizes):
            await pub.publish(ch, {"n": i, "pad": "%c" % (65 + i % 26) * n})
        raw.send_frame(0x9, b"first")  # answered while the server's queue is full
        raw.sock.settimeout(60)
        loop = asyncio.get_running_loop()

        def read_all():
            got, pongs, pinged = [], [], False
            while len(got) < len(sizes) or len(pongs) < 2:
                if len(got) >= len(sizes) // 2 and not pinged:
                    raw.send_frame(0x9, b"second")  # and one while frames flow
                    pinged = True
                time.sleep(0.002 if len(got) % 8 == 0 else 0)  # a reader that lags
                kind, payload = raw.recv_message()
                if kind == "pong":
                    pongs.append(payload)
                elif kind == "text":
                    got.append(json.loads(payload))
                else:
                    raise T.TestFailure("unexpected %s frame %r" % (kind, payload[:60]))
            return got, pongs

        got, pongs = await asyncio.wait_for(loop.run_in_executor(None, read_all), 120)
        check_eq(pongs, [b"first", b"second"], "each ping answered once, with its payload")
        check_eq([m.get("seq") for m in got], list(range(1, len(sizes) + 1)), "every message, in order")
        for i, m in enumerate(got):
            d = m["data"]
            check(d["n"] == i and d["pad"] == "%c" % (65 + i % 26) * sizes[i],
                  "message %d arrived whole (%d bytes of data)" % (i, sizes[i]))
        m = s.metrics()
        check_eq(T.metric(m, "tern_slow_consumer_closes_total"), 0, "nobody was cut off")
        raw.close()
        await pub.close()


if __name__ == "__main__":
    T.main(globals())
