"""Graceful shutdown: on SIGTERM or SIGINT every WebSocket client gets close
code 1001, the process exits 0 (a leak under ASan makes that non-zero), a
client that never answers the close delays exit by at most ~5 s, and every
publish acknowledged before the signal is on disk afterwards."""

import asyncio
import json
import signal
import time

import websockets

import ternlib as T
from ternlib import Client, RawWS, check, check_eq


async def shutdown_with_clients(sig):
    s = T.Server().start()
    try:
        ch = "bye:%d" % time.time_ns()
        idle = await Client.connect(s)
        subbed = await Client.connect(s)
        await subbed.subscribe(ch)
        await idle.publish(ch, "x")
        await subbed.message(ch)
        loop = asyncio.get_running_loop()
        t0 = time.monotonic()
        stopping = loop.run_in_executor(None, s.stop, sig)
        try:
            for c, what in ((idle, "idle client"), (subbed, "subscribed client")):
                frames, code, reason = await c.expect_close(timeout=T.STOP_S)
                check_eq(code, 1001, "%s gets close 1001 on signal %d (reason %r)" % (what, sig, reason))
        finally:
            rc = await stopping  # asserts exit code 0
        took = time.monotonic() - t0
        check_eq(rc, 0, "exit code")
        check(took < 15, "clients that answer the close let it exit promptly (%.1f s)" % took)
    finally:
        s.cleanup()


async def test_sigterm_closes_clients_1001_and_exits_0():
    await shutdown_with_clients(signal.SIGTERM)


async def test_sigint_closes_clients_1001_and_exits_0():
    await shutdown_with_clients(signal.SIGINT)


def test_unresponsive_client_does_not_hold_shutdown():
    """A client that reads the close frame but never answers: the server waits
    up to 5 s, then exits 0 anyway."""
    s = T.Server().start()
    try:
        raw = RawWS(s.port)
        raw.recv_message()  # connected
        t0 = time.monotonic()
        s.send_signal(signal.SIGTERM)
        kind, payload = raw.recv_message()
        check_eq(kind, "close", "the unresponsive client is sent a close frame")
        check_eq(T.close_code(payload), 1001, "close code 1001")
        rc = s.stop(timeout=30, send=False)
        took = time.monotonic() - t0
        check_eq(rc, 0, "exit code")
        check(took < 12, "exit within ~5 s of waiting for an unanswered close (took %.1f s)" % took)
        raw.close()
    finally:
        s.cleanup()


def test_close_handshake_is_clean():
    """RFC 6455 5.5.1: after its close frame an endpoint sends nothing more. The
    client answers the 1001 with its own close; the server must then just end
    the TCP connection: no second close frame (browsers report 1006 for that)."""
    s = T.Server().start()
    try:
        raw = RawWS(s.port)
        raw.recv_message()  # connected
        s.send_signal(signal.SIGTERM)
        kind, payload = raw.recv_message()
        check_eq((kind, T.close_code(payload)), ("close", 1001), "close frame with 1001")
        after = raw.answer_close(payload)
        check(not after, "nothing after the server's close frame, then EOF (got %r)" % (after,))
        raw.close()
        s.stop(send=False)
    finally:
        s.cleanup()


def test_exit_0_with_idle_server():
    s = T.Server().start()
    try:
        rc = s.stop(signal.SIGTERM)
        check_eq(rc, 0, "exit code of an idle server on SIGTERM")
        s.start()
        rc = s.stop(signal.SIGINT)
        check_eq(rc, 0, "exit code of an idle server on SIGINT")
    finally:
        s.cleanup()


async def test_publishes_acknowledged_before_sigterm_are_kept():
    s = T.Server().start()
    try:
        ch = "drain:%d" % time.time_ns()
        c = await Client.connect(s)
        n = 300
        for i in range(n):
            await c.send({"op": "publish", "ref": i + 1, "channel": ch, "data": i})
        # Signal while publishes are in flight; collect whatever was acknowledged.
        s.send_signal(signal.SIGTERM)
        acked = {}
        try:
            while True:
                f = await c.frame(T.STOP_S)
                if f.get("op") == "ok":
                    acked[f["seq"]] = (f["ref"] - 1, f["id"])
        except (websockets.ConnectionClosed, asyncio.TimeoutError):
            pass
        s.stop(send=False)
        s.start()
        hist = {m["seq"]: m for m in s.full_history(ch)}
        for seq, (data, mid) in acked.items():
            check(seq in hist, "acknowledged seq %d kept after SIGTERM" % seq)
            check_eq((hist[seq]["data"], hist[seq]["id"]), (data, mid), "seq %d content" % seq)
        check_eq(sorted(hist), list(range(1, len(hist) + 1)), "history gapless")
        print("  %d of %d publishes acknowledged before the close" % (len(acked), n))
        s.stop()
    finally:
        s.cleanup()


def test_healthz_and_new_connections_stop_during_drain():
    """After SIGTERM the listener stops taking new WebSocket sessions (or the
    process is already gone): nothing hangs."""
    s = T.Server().start()
    try:
        raw = RawWS(s.port)
        raw.recv_message()
        s.send_signal(signal.SIGTERM)
        raw.recv_message()  # the close frame; we do not answer, so it drains for up to 5 s
        time.sleep(0.5)
        t0 = time.monotonic()

        async def try_connect():
            try:
                c = await Client.connect(s.ws_url)
                frames, code, _ = await c.expect_close(timeout=10)
                return code
            except (OSError, websockets.InvalidHandshake, websockets.ConnectionClosed, T.TestFailure, asyncio.TimeoutError):
                return "refused"
        result = T.run(try_connect)
        check(time.monotonic() - t0 < 12, "a connection attempt during drain does not hang")
        check(result in ("refused", 1001), "a new connection during drain is refused or closed 1001 (%r)" % (result,))
        raw.close()
        s.stop(send=False)
    finally:
        s.cleanup()


if __name__ == "__main__":
    T.main(globals())
