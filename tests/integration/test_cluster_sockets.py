"""Cluster (issue 5): the node's socket count does not grow with clients.

A node linked to E edges with K data links each holds E x (1 + K) link sockets
plus its listener, however many clients the edges serve. Counted as the
entries of /proc/<node pid>/fd that read "socket:[...]" (listening ones told
apart through /proc/<pid>/net/tcp{,6}), with no HTTP to the node meanwhile.
"""

import asyncio
import time

import clusterlib as C
import queuelib as Q
import ternlib as T
from ternlib import Client, check, check_eq

N_CLIENTS = 300
N_CHANNELS = 30


def expect_sockets(node, edges, k, what):
    want_links = edges * (1 + k)
    total, listening, _ = C.wait_sockets(node, want_links + 1)
    print("  %s: node holds %d sockets (%d listening); want %d link sockets + 1 listener"
          % (what, total, listening, want_links), flush=True)
    check_eq((total - listening, listening), (want_links, 1),
             "%s: node's (link sockets, listening sockets) with %d edges x (1 + K=%d)" % (what, edges, k))


async def open_clients(urls, n, conc=40):
    sem = asyncio.Semaphore(conc)
    out = [None] * n

    async def one(i):
        async with sem:
            out[i] = await Client.connect(urls[i % len(urls)])
    await asyncio.gather(*(one(i) for i in range(n)))
    return out


async def test_node_sockets_stay_at_links_with_300_clients():
    with C.Cluster(edges=2, links=2) as cl:
        a, b = cl.edges
        node = cl.node
        expect_sockets(node, 2, 2, "before any client")
        m = node.metrics()
        check_eq((m.get('tern_node_links{plane="control"}'), m.get('tern_node_links{plane="data"}')),
                 (2.0, 4.0), "tern_node_links{plane=control,data} with 2 edges, K=2")
        prefix = Q.qname("sock")
        clients = await open_clients([a.ws_url, b.ws_url], N_CLIENTS)
        chans = ["%s:%d" % (prefix, i % N_CHANNELS) for i in range(N_CLIENTS)]
        sem = asyncio.Semaphore(50)

        async def sub(i):
            async with sem:
                await clients[i].subscribe(chans[i])
        await asyncio.gather(*(sub(i) for i in range(N_CLIENTS)))
        # Every 5th client publishes 3 messages on its channel, on whichever edge it is.
        published = {}

        async def pub(i):
            async with sem:
                for j in range(3):
                    await clients[i].publish(chans[i], {"from": i, "j": j})
        publishers = [i for i in range(N_CLIENTS) if i % 5 == 0]
        for i in publishers:
            published[chans[i]] = published.get(chans[i], 0) + 3
        await asyncio.gather(*(pub(i) for i in publishers))
        # Sockets while 300 clients are connected and subscribed.
        expect_sockets(node, 2, 2, "with %d WebSocket clients on 2 edges" % N_CLIENTS)
        # Every subscriber got every message of its channel, in seq order.
        async def recv(i):
            n = published.get(chans[i], 0)
            if n == 0:
                await clients[i].sync()
                check_eq([f for f in clients[i].backlog if f.get("op") == "message"], [],
                         "client %d on %s (nobody published there): no message" % (i, chans[i]))
                return
            got = await clients[i].messages(chans[i], n, timeout=T.WAIT_S)
            C.check_contiguous([g["seq"] for g in got], "client %d on %s" % (i, chans[i]), 1, n)
        await asyncio.gather(*(recv(i) for i in range(N_CLIENTS)))
        expect_sockets(node, 2, 2, "after the messages were delivered")
        for c in clients:
            await c.close()


async def test_node_sockets_with_three_data_links():
    with C.Cluster(edges=2, links=3) as cl:
        a, b = cl.edges
        expect_sockets(cl.node, 2, 3, "2 edges, K=3, no client")
        clients = await open_clients([a.ws_url, b.ws_url], 40)
        ch = Q.qname("sock3")
        for c in clients:
            await c.subscribe(ch)
        for i in range(10):
            await clients[i].publish(ch, i)
        for c in clients:
            got = await c.messages(ch, 10)
            C.check_contiguous([g["seq"] for g in got], "K=3 subscriber", 1, 10)
        expect_sockets(cl.node, 2, 3, "2 edges, K=3, 40 clients")
        m = cl.node.metrics()
        check_eq((m.get('tern_node_links{plane="control"}'), m.get('tern_node_links{plane="data"}')),
                 (2.0, 6.0), "tern_node_links{plane=control,data} with 2 edges, K=3")
        for c in clients:
            await c.close()


if __name__ == "__main__":
    T.main(globals())
