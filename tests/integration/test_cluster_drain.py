"""Cluster (issue 5): draining loses no acknowledged call.

- publishers on an edge publish continuously (WebSocket, with ref); the node
  gets SIGTERM mid-load, drains and exits 0, and is started again on the same
  port and data dir: every publish that got `ok` is in history with its seq,
  id and data; every publish that got an error got 50300 (retryable);
- SIGTERM to an edge closes its WebSocket clients with close code 1001 and the
  edge exits 0.
"""

import asyncio
import signal
import time

import clusterlib as C
import queuelib as Q
import ternlib as T
from ternlib import Client, check, check_eq

PUBLISHERS = 4


async def test_node_drain_loses_no_acknowledged_publish():
    with C.Cluster(edges=1) as cl:
        e = cl.edges[0]
        node = cl.node
        ch = Q.qname("drain")
        pubs = [await Client.connect(e.ws_url) for _ in range(PUBLISHERS)]
        oks = []      # (seq, id, data)
        errors = []   # error objects
        phase = {"restarted": False, "after": 0}
        stop = asyncio.Event()

        async def run(p, k):
            for i in range(1000000):
                if stop.is_set():
                    break
                data = {"p": k, "i": i}
                r = await p.call("publish", timeout=T.WAIT_S, channel=ch, data=data)
                if r.get("op") == "ok":
                    oks.append((r["seq"], r["id"], data))
                    if phase["restarted"]:
                        phase["after"] += 1
                else:
                    check_eq(r.get("op"), "error", "publish reply is ok or error (%r)" % (r,))
                    errors.append(r.get("error"))
                    await asyncio.sleep(0.02)

        tasks = [asyncio.ensure_future(run(p, k)) for k, p in enumerate(pubs)]
        try:
            await asyncio.sleep(1.0)
            n_before = len(oks)
            check(n_before > 0, "publishes succeeded before the drain")
            t0 = time.monotonic()
            rc = await Q.in_thread(node.stop, signal.SIGTERM)
            print("  node drained and exited %r in %.2fs under load (%d ok before)"
                  % (rc, time.monotonic() - t0, n_before), flush=True)
            await Q.in_thread(node.start)
            await Q.in_thread(e.wait_health, 200, 10)
            phase["restarted"] = True
            for _ in range(100):
                if phase["after"] >= 50:
                    break
                await asyncio.sleep(0.1)
            check(phase["after"] >= 50, "publishes succeed again after the restart", phase)
        finally:
            stop.set()
            done, pending = await asyncio.wait(tasks, timeout=T.WAIT_S)
            for t in pending:
                t.cancel()
        for t in tasks:
            if t.done() and not t.cancelled() and t.exception() is not None:
                raise t.exception()
        check(not pending, "every publisher finished its last call", len(pending))
        print("  %d publishes ok, %d errors (%s)" % (len(oks), len(errors),
              sorted({(x or {}).get("code") for x in errors})), flush=True)
        for err in errors:
            T.check_error(err, 50300, "a publish refused during the drain/restart")
        seqs = [s for s, _, _ in oks]
        check_eq(len(set(seqs)), len(seqs), "no seq ok'd twice")
        hist = {m["seq"]: m for m in e.full_history(ch)}
        missing = [(s, i, d) for s, i, d in oks if s not in hist]
        check_eq(missing[:10], [], "every ok'd publish is in history (%d missing of %d)" % (len(missing), len(oks)))
        wrong = [(s, i, d, hist[s]) for s, i, d in oks if hist[s]["id"] != i or hist[s]["data"] != d]
        check_eq(wrong[:5], [], "history holds each ok'd publish under its seq with its id and data")
        C.check_contiguous(sorted(hist), "history seqs", 1)
        for p in pubs:
            await p.close()


async def test_edge_sigterm_closes_clients_1001():
    with C.Cluster(edges=1) as cl:
        e = cl.edges[0]
        ch = Q.qname("esig")
        clients = [await Client.connect(e.ws_url) for _ in range(3)]
        await clients[0].subscribe(ch)
        await clients[1].publish(ch, 1)
        e.send_signal(signal.SIGTERM)
        await C.expect_all_closed(clients, 1001, "on edge SIGTERM")
        rc = await Q.in_thread(e.stop, signal.SIGTERM, None, 0, False)
        check_eq(rc, 0, "edge exit code after SIGTERM")
        check_eq(cl.node.health(timeout=2.0), 200, "node healthy after the edge left")
        total, listening, _ = C.wait_sockets(cl.node, 1)
        check_eq((total, listening), (1, 1), "node holds only its listener after its only edge left")


if __name__ == "__main__":
    T.main(globals())
