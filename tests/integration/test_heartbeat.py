"""Connection liveness: heartbeat frames after heartbeat_ms of silence (as
configured and announced in the connected frame), and a handshake that never
completes is dropped after handshake_timeout_s without disturbing anyone."""

import asyncio
import socket
import time

import ternlib as T
from ternlib import Client, check, check_eq


async def test_heartbeat_when_idle():
    with T.Server(config={"heartbeat_ms": 200}) as s:
        c = await Client.connect(s, keep_heartbeats=True)
        check_eq(c.connected.get("heartbeat_ms"), 200, "connected frame announces the configured heartbeat_ms")
        frames = []
        t0 = time.monotonic()
        while time.monotonic() - t0 < 3.0:
            try:
                frames.append(await c.raw_frame(timeout=max(0.05, 3.0 - (time.monotonic() - t0))))
            except asyncio.TimeoutError:
                break
        beats = [f for f in frames if f.get("op") == "heartbeat"]
        check(len(beats) >= 3, "an idle client gets heartbeats every ~200 ms (got %d in 3 s)" % len(beats), frames[:5])
        check(len(beats) <= 30, "heartbeats are not sent far more often than heartbeat_ms (got %d in 3 s)" % len(beats))
        for f in beats:
            check_eq(f, {"op": "heartbeat"}, "heartbeat frame")
        await c.close()


async def test_no_heartbeat_needed_while_busy():
    """While messages flow every 50 ms the connection stays alive and the
    messages arrive; heartbeats, if any, are rarer than when idle."""
    with T.Server(config={"heartbeat_ms": 500}) as s:
        ch = "beat:%d" % time.time_ns()
        c = await Client.connect(s, keep_heartbeats=True)
        await c.subscribe(ch)
        pub = await Client.connect(s)
        frames = []
        for i in range(40):
            await pub.publish(ch, i)
            await asyncio.sleep(0.05)
        await c.ping()
        frames = c.backlog
        msgs = [f["data"] for f in frames if f.get("op") == "message"]
        beats = [f for f in frames if f.get("op") == "heartbeat"]
        check_eq(msgs, list(range(40)), "messages delivered")
        check(len(beats) <= 2, "heartbeats only after heartbeat_ms of silence (got %d while busy)" % len(beats))
        await c.close()
        await pub.close()


def test_default_heartbeat_ms():
    async def go(s):
        c = await Client.connect(s)
        check_eq(c.connected.get("heartbeat_ms"), 15000, "default heartbeat_ms")
        await c.close()
    with T.Server() as s:
        T.run(go, s)


def test_handshake_timeout_drops_silent_connections():
    with T.Server(config={"handshake_timeout_s": 1}) as s:
        silent = socket.create_connection((T.HOST, s.port), timeout=30)
        partial = socket.create_connection((T.HOST, s.port), timeout=30)
        partial.sendall(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n")  # never finished
        t0 = time.monotonic()
        for sock, what in ((silent, "silent"), (partial, "partial request")):
            try:
                data = sock.recv(4096)
                while data:  # an error response is fine; then the close
                    data = sock.recv(4096)
            except (ConnectionResetError, socket.timeout) as e:
                check(not isinstance(e, socket.timeout), "%s connection dropped within 30 s" % what)
            sock.close()
        took = time.monotonic() - t0
        time.sleep(0.3)
        check(s.proc.poll() is None, "the server survives dropping unfinished handshakes (it exited %r)" % s.proc.returncode)
        check(took < 15, "handshake_timeout_s 1 drops unfinished handshakes promptly (took %.1f s)" % took)
        status, _, _ = s.http("GET", "/healthz")
        check_eq(status, 200, "server healthy after dropping them")


if __name__ == "__main__":
    T.main(globals())
