"""Durability: messages survive a graceful restart and a SIGKILL; every
message a publisher got `ok` for is there after the crash with its seq, id and
data; seq continues without a gap; idempotency keys hold across a restart."""

import asyncio
import signal
import time

import ternlib as T
from ternlib import Client, check, check_eq


async def test_restart_keeps_history_and_seq():
    s = T.Server().start()
    try:
        ch = "dur:%d" % time.time_ns()
        c = await Client.connect(s)
        acked = {}
        for i in range(50):
            r = await c.publish(ch, {"i": i}, **({"name": "evt"} if i % 3 == 0 else {}))
            acked[r["seq"]] = r["id"]
        r = await c.publish(ch, "once", idempotency_key="restart-key")
        acked[r["seq"]] = r["id"]
        first = r
        before = s.full_history(ch)
        await c.close()
        s.stop()
        s.start()
        after = s.full_history(ch)
        check_eq(after, before, "history after a graceful restart is identical")
        check_eq(s.channel_info(ch)["last_seq"], 51, "last_seq after restart")
        c = await Client.connect(s)
        r = await c.publish(ch, "once", idempotency_key="restart-key")
        check_eq((r["seq"], r["id"]), (first["seq"], first["id"]), "idempotency key holds across a restart")
        r = await c.publish(ch, "next")
        check_eq(r["seq"], 52, "seq continues after a restart")
        check(r["id"] not in acked.values(), "a new id after restart", r["id"])
        await c.subscribe(ch, rewind=3)
        got = await c.messages(ch, 3)
        check_eq([m["seq"] for m in got], [50, 51, 52], "rewind across the restart")
        await c.close()
        s.stop()
    finally:
        s.cleanup()


async def test_sigkill_loses_no_acknowledged_message():
    """Four publishers run flat out; SIGKILL lands mid-stream. Everything that
    got `ok` must be there after restart, and the channel must be gapless."""
    s = T.Server().start()
    try:
        stamp = time.time_ns()
        chans = ["crash:%d:%d" % (stamp, i) for i in range(2)]
        acked = {ch: {} for ch in chans}
        stop = asyncio.Event()

        async def publisher(p):
            c = await Client.connect(s)
            n = 0
            try:
                while not stop.is_set() and n < 100000:
                    ch = chans[n % 2]
                    data = {"p": p, "n": n}
                    r = await c.call("publish", channel=ch, data=data)
                    if r.get("op") == "ok":
                        acked[ch][r["seq"]] = (data, r["id"])
                    n += 1
            except Exception:
                pass  # the server was killed under us: expected
        tasks = [asyncio.ensure_future(publisher(p)) for p in range(4)]
        # Let a decent number through, bounded in time.
        deadline = time.monotonic() + 60
        while sum(len(a) for a in acked.values()) < 400 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        check(sum(len(a) for a in acked.values()) > 0, "publishers made progress before the kill")
        s.kill()
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 60)
        n_acked = sum(len(a) for a in acked.values())
        s.start()
        for ch in chans:
            hist = {m["seq"]: m for m in s.full_history(ch)}
            last = s.channel_info(ch)["last_seq"]
            check_eq(sorted(hist), list(range(1, last + 1)), "%s: history 1..last_seq without gap" % ch)
            for seq, (data, mid) in acked[ch].items():
                m = hist.get(seq)
                check(m is not None, "%s: acknowledged seq %d survived SIGKILL" % (ch, seq))
                check_eq((m["data"], m["id"]), (data, mid), "%s seq %d after SIGKILL" % (ch, seq))
            check(last >= max(acked[ch] or [0]), "last_seq covers every acked seq", last)
        c = await Client.connect(s)
        for ch in chans:
            last = s.channel_info(ch)["last_seq"]
            r = await c.publish(ch, "after")
            check_eq(r["seq"], last + 1, "%s: seq continues after the crash" % ch)
        await c.close()
        s.stop()
        print("  %d acknowledged messages, all present after SIGKILL" % n_acked)
    finally:
        s.cleanup()


async def test_sigkill_keeps_idempotency_keys():
    s = T.Server().start()
    try:
        ch = "crash-idem:%d" % time.time_ns()
        c = await Client.connect(s)
        firsts = {}
        for i in range(10):
            firsts[i] = await c.publish(ch, i, idempotency_key="k%d" % i)
        s.kill()
        s.start()
        c = await Client.connect(s)
        for i in range(10):
            r = await c.publish(ch, i, idempotency_key="k%d" % i)
            check_eq((r["seq"], r["id"]), (firsts[i]["seq"], firsts[i]["id"]), "key k%d after SIGKILL" % i)
        check_eq(s.channel_info(ch)["last_seq"], 10, "no re-publish after SIGKILL")
        await c.close()
        s.stop()
    finally:
        s.cleanup()


async def test_rest_ack_is_durable_across_sigkill():
    s = T.Server().start()
    try:
        ch = "crash-rest:%d" % time.time_ns()
        out = s.publish_rest(ch, [{"data": i} for i in range(100)])
        s.kill()
        s.start()
        hist = s.full_history(ch)
        check_eq([(m["seq"], m["id"], m["data"]) for m in hist],
                 [(o["seq"], o["id"], i) for i, o in enumerate(out)], "REST 201 means durable")
        s.stop()
    finally:
        s.cleanup()


def test_restart_after_sigterm_many_times():
    """Five stop/start cycles on one data dir: always clean, always all there."""
    s = T.Server().start()
    try:
        ch = "cycles:%d" % time.time_ns()
        total = 0
        for cycle in range(5):
            s.publish_rest(ch, [{"data": [cycle, i]} for i in range(10)])
            total += 10
            s.stop(signal.SIGTERM if cycle % 2 == 0 else signal.SIGINT)
            s.start()
            check_eq(s.channel_info(ch)["last_seq"], total, "after cycle %d" % cycle)
        check_eq(len(s.full_history(ch)), total, "all messages kept")
        s.stop()
    finally:
        s.cleanup()


if __name__ == "__main__":
    T.main(globals())
