"""One edge, several worker processes (`tern edge --workers W`), seen by clients.

- The W workers share the client port: clients land on every worker (each
  connection is found in exactly one worker's descriptors), every subscriber
  gets every message once and in order whichever worker holds it, the node
  holds W x (1 + K) link sockets, and /metrics says which worker answered.
- A worker killed with SIGKILL is started again by the supervisor; only its
  own clients lose their connection; the others keep publishing and
  receiving; new clients reach every worker again.
- A worker that keeps dying young is restarted after pauses that double.
- SIGTERM to the supervisor drains every worker (clients closed 1001) and it
  exits 0; SIGKILL of the supervisor makes the workers drain and exit too.
- A handshake that stalls is cut after handshake_timeout_s on every worker
  (connections a worker accepts itself are served by lws like its own).
- Bad starts: a port held by another socket, --workers 0 / 65, and `workers`
  in tern dev's config, each end with one line and a non-zero exit, leaving
  no process behind.
"""

import asyncio
import contextlib
import os
import re
import resource
import signal
import socket
import subprocess
import time

import clusterlib as C
import queuelib as Q
import ternlib as T
from ternlib import Client, check, check_eq

W = 3
K = 2
N_CLIENTS = 60


def children(pid):
    """PIDs whose parent is pid (from /proc/N/status)."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open("/proc/%s/status" % d) as f:
                for line in f:
                    if line.startswith("PPid:"):
                        if int(line.split()[1]) == pid:
                            out.append(int(d))
                        break
        except OSError:
            pass
    return sorted(out)


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def wait_workers(edge, n, timeout, what, gone=()):
    """The supervisor's n live workers (zombies not counted), none of `gone`."""
    def live():
        k = [w for w in children(edge.pid) if alive(w)]
        return k if len(k) == n and not set(k) & set(gone) else None
    return C.wait_until(live, timeout, "%s: %d workers under the supervisor" % (what, n))


def socket_inodes(pid):
    out = set()
    try:
        for fd in os.listdir("/proc/%d/fd" % pid):
            try:
                m = re.match(r"^socket:\[(\d+)\]$", os.readlink("/proc/%d/fd/%s" % (pid, fd)))
            except OSError:
                continue
            if m:
                out.add(m.group(1))
    except OSError:
        pass
    return out


def owners(edge_port, clients, workers):
    """For each client, the worker PID holding the server side of its
    connection (or None), by the client's local port in /proc/net/tcp."""
    inode_of = {}  # client port -> inode of the edge's socket to it
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            p = line.split()
            lport = int(p[1].split(":")[1], 16)
            rport = int(p[2].split(":")[1], 16)
            if lport == edge_port and p[3] == "01":
                inode_of[rport] = p[9]
    held = {w: socket_inodes(w) for w in workers}
    out = []
    for c in clients:
        ino = inode_of.get(c.ws.local_address[1])
        hit = [w for w in workers if ino is not None and ino in held[w]]
        check(len(hit) <= 1, "a connection in two workers", hit)
        out.append(hit[0] if hit else None)
    return out


async def open_clients(url, n, conc=30):
    sem = asyncio.Semaphore(conc)
    out = [None] * n

    async def one(i):
        async with sem:
            out[i] = await Client.connect(url)
    await asyncio.gather(*(one(i) for i in range(n)))
    return out


async def check_all_get(clients, ch, first, last, what):
    async def one(i, c):
        got = await c.messages(ch, last - first + 1)
        C.check_contiguous([g["seq"] for g in got], "%s: client %d" % (what, i), first, last)
    await asyncio.gather(*(one(i, c) for i, c in enumerate(clients)))


@contextlib.contextmanager
def workers_cluster(config=None):
    """A node and one edge of W workers; both gone (by PID) on the way out."""
    node = C.Node("n1").start()
    edge = C.Edge("edgeW", [node], config=config, links=K, workers=W)
    try:
        edge.start()
        yield node, edge
    finally:
        edge.cleanup()
        node.stop()
        node.cleanup()


async def test_workers_share_the_port_and_every_subscriber_gets_every_message():
    with workers_cluster() as (node, edge):
        workers = wait_workers(edge, W, 10, "after start")
        line = [l for l in edge.stderr().splitlines() if "listening on" in l]
        check_eq(len(line), 1, "one start line from the supervisor", edge.stderr())
        check("with %d worker processes sharing the port (pids %s)"
              % (W, ",".join(str(w) for w in workers)) in line[0],
              "start line names the workers", line[0], workers)
        m = node.metrics()
        check_eq((m.get('tern_node_links{plane="control"}'), m.get('tern_node_links{plane="data"}')),
                 (float(W), float(W * K)), "node links: one control + K data per worker")

        clients = await open_clients(edge.ws_url, N_CLIENTS)
        who = owners(edge.port, clients, workers)
        check(None not in who, "every connection is held by one worker", who)
        per = {w: who.count(w) for w in workers}
        print("  clients per worker: %s" % per, flush=True)
        check(min(per.values()) > 0, "the kernel spread %d clients over all %d workers" % (N_CLIENTS, W), per)

        ch = Q.qname("wk")
        for c in clients:
            await c.subscribe(ch)
        # Publishers on three different workers, in turn: one order for all.
        pubs = [clients[who.index(w)] for w in workers]
        for i in range(30):
            r = await pubs[i % W].publish(ch, {"i": i})
            check_eq(r.get("seq"), i + 1, "publish %d seq" % i)
        await check_all_get(clients, ch, 1, 30, "30 messages")

        seen = set()
        for _ in range(40):
            mm = edge.metrics()
            check_eq(mm.get("tern_edge_workers"), float(W), "tern_edge_workers")
            seen.add(mm.get("tern_edge_worker_index"))
        check(seen <= {float(i) for i in range(W)} and len(seen) >= 2,
              "scrapes reach several workers, each says its index", seen)
        for c in clients:
            await c.close()
        edge.stop()
        for w in workers:
            check(not alive(w), "worker %d gone after the supervisor exited" % w)


async def test_a_killed_worker_is_replaced_and_harms_only_its_clients():
    with workers_cluster() as (node, edge):
        workers = wait_workers(edge, W, 10, "after start")
        clients = await open_clients(edge.ws_url, N_CLIENTS)
        who = owners(edge.port, clients, workers)
        ch = Q.qname("wkill")
        for c in clients:
            await c.subscribe(ch)
        victim = max(workers, key=who.count)
        survivors = [c for c, w in zip(clients, who) if w != victim]
        lost = [c for c, w in zip(clients, who) if w == victim]
        check(len(lost) > 0 and len(survivors) > 0, "clients on the victim and on others", who)
        os.kill(victim, signal.SIGKILL)
        for i, c in enumerate(lost):
            await c.expect_close(timeout=10)
        # The others never noticed: they publish and receive, gap-free.
        for i in range(10):
            await survivors[i % len(survivors)].publish(ch, i)
        await check_all_get(survivors, ch, 1, 10, "survivors after a worker was killed")
        again = wait_workers(edge, W, 10, "after the kill", gone=[victim])
        check(victim not in again, "the killed worker was replaced", again)
        err = edge.stderr()
        check(re.search(r"edge worker \d \(pid %d\) was killed by signal 9 \(Killed\); starting another"
                        % victim, err), "supervisor says which worker died and that it restarts it", err)
        fresh = await open_clients(edge.ws_url, 30)
        who2 = owners(edge.port, fresh, again)
        check(None not in who2 and len(set(who2)) == W, "new clients reach all %d workers" % W, who2)
        for c in fresh:
            await c.subscribe(ch)
        await survivors[0].publish(ch, "after")
        await check_all_get(fresh + survivors, ch, 11, 11, "everyone after the restart")
        for c in fresh + survivors:
            await c.close()
        edge.stop()


def test_a_worker_that_keeps_dying_is_restarted_ever_later():
    """Deaths within 10 s of a start double the pause before the next start
    (100, 200, 400 ms ...): a crash loop does not spin."""
    with workers_cluster() as (node, edge):
        workers = wait_workers(edge, W, 10, "after start")
        victim, pauses = workers[0], []
        for _ in range(4):
            t0 = time.monotonic()
            os.kill(victim, signal.SIGKILL)
            now = wait_workers(edge, W, 10, "in place of %d" % victim, gone=[victim])
            pauses.append(time.monotonic() - t0)
            new = [w for w in now if w not in workers]
            check_eq(len(new), 1, "one new worker", now, workers)
            workers, victim = now, new[0]
        said = [int(m) for m in re.findall(r"; starting another in (\d+) ms", edge.stderr())]
        print("  pauses said %s, seen %s" % (said, ["%.2f" % p for p in pauses]), flush=True)
        check_eq(said, [100, 200, 400, 800], "the pause doubles while the same worker dies young")
        check(pauses[3] >= 0.8, "the fourth restart waited its 800 ms", pauses)
        check_eq(edge.health(), 200, "edge healthy after the crash loop")
        edge.stop()


async def test_sigterm_drains_every_worker_and_sigkill_of_the_supervisor_ends_them():
    with workers_cluster() as (node, edge):
        workers = wait_workers(edge, W, 10, "after start")
        clients = await open_clients(edge.ws_url, 30)
        check_eq(len(set(owners(edge.port, clients, workers))), W, "30 clients over all workers")
        edge.send_signal(signal.SIGTERM)
        await C.expect_all_closed(clients, 1001, "on SIGTERM")
        rc = await Q.in_thread(edge.stop, signal.SIGTERM, None, 0, False)
        check_eq(rc, 0, "supervisor exit code after SIGTERM")
        for w in workers:
            check(not alive(w), "worker %d gone" % w)
        err = edge.stderr()
        check("SIGTERM received, draining %d edge workers" % W in err and "tern: stopped" in err,
              "supervisor says it drains and stopped", err)

        # SIGKILL of the supervisor: its workers get SIGTERM (PR_SET_PDEATHSIG) and go.
        edge.start()
        workers = wait_workers(edge, W, 10, "second start")
        c = await Client.connect(edge.ws_url)
        edge.kill()
        _, code, _ = await c.expect_close(timeout=10)
        check_eq(code, 1001, "a client's close code when the supervisor was killed")
        C.wait_until(lambda: not any(alive(w) for w in workers), 15,
                     "workers exit after their supervisor was killed")


def test_handshake_timeout_holds_on_every_worker():
    socks = []
    with workers_cluster({"handshake_timeout_s": 1}) as (node, edge):
        workers = wait_workers(edge, W, 10, "after start")
        # Silent connections and a request cut short, spread over the workers.
        for i in range(12):
            s = socket.create_connection((T.HOST, edge.port), timeout=10)
            if i % 2:
                s.sendall(b"GET /v1/ws HTTP/1.1\r\nHost: x\r\n")
            socks.append(s)
        t0 = time.monotonic()
        for i, s in enumerate(socks):
            s.settimeout(max(0.1, 8 - (time.monotonic() - t0)))
            try:
                data = s.recv(4096)
                while data:
                    data = s.recv(4096)
            except socket.timeout:
                raise T.TestFailure("connection %d still open %.1fs after connecting, "
                                    "handshake_timeout_s 1" % (i, time.monotonic() - t0))
            except ConnectionResetError:
                pass
        took = time.monotonic() - t0
        print("  12 stalled handshakes closed within %.1fs" % took, flush=True)
        check(took < 6, "stalled handshakes end near handshake_timeout_s", took)
        check_eq(children(edge.pid), workers, "no worker died of it")
        check_eq(edge.health(), 200, "edge healthy")
        edge.stop()
    for s in socks:
        s.close()


def nofile_limit(nofile):
    """A preexec_fn that sets the child's open files limit (soft and hard)."""
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))


def run_tern(args, timeout=20, nofile=None):
    return subprocess.run([T.TERN] + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, timeout=timeout,
                          preexec_fn=nofile_limit(nofile) if nofile else None)


def test_too_few_descriptors_end_with_one_line():
    """A start that runs out of descriptors (event loop, database, listener)
    says why in one line and exits 1; it once crashed (an unchecked
    uv_loop_init, then a double free)."""
    node = C.Node("n1").start()
    try:
        d = T.tmpdir()
        for nofile in (6, 8, 10, 12):
            cmds = {
                "edge": ["edge", "--region", "r1", "--listen", "%s:%d" % (T.HOST, T.free_port()),
                         "--nodes", node.addr],
                "edge --workers 2": ["edge", "--region", "r1", "--listen",
                                     "%s:%d" % (T.HOST, T.free_port()), "--nodes", node.addr,
                                     "--workers", "2"],
                "dev": ["dev", "--listen", "%s:%d" % (T.HOST, T.free_port()),
                        "--data", os.path.join(d, "dev%d" % nofile)],
                "node": ["node", "--id", "x", "--listen", "%s:%d" % (T.HOST, T.free_port()),
                         "--data", os.path.join(d, "node%d" % nofile)],
            }
            for what, args in cmds.items():
                if what.endswith("--workers 2") and nofile < 7:
                    # A worker starts with its ready pipe open: at 6 the
                    # pipe libuv makes for signals in uv_loop_init fails,
                    # and libuv abort()s there, before Tern can say a word.
                    continue
                r = run_tern(args, nofile=nofile)
                err = r.stderr.decode(errors="replace")
                lines = [l for l in err.splitlines() if l.startswith("tern")]
                check_eq(r.returncode, 1, "%s with ulimit -n %d: exit code" % (what, nofile), err)
                check(len(lines) >= 1 and ("open files" in err or "unable to open" in err
                                           or "cannot" in err),
                      "%s with ulimit -n %d says why" % (what, nofile), err)
                # (LeakSanitizer, in the sanitizer build, may itself lack the
                # descriptors to run: that says nothing about Tern.)
                check("AddressSanitizer" not in err and "runtime error" not in err
                      and "Segmentation" not in err and "Aborted" not in err,
                      "%s with ulimit -n %d: no crash" % (what, nofile), err)
    finally:
        node.stop()
        node.cleanup()


def test_just_enough_descriptors_start_and_stop_or_say_why():
    """Around the smallest open-files limit an edge or dev can start with,
    every start either fails with one line and exit 1, or listens and then
    drains and exits 0 on SIGTERM. Just above the limit where a start
    failed, lws once could not make its wake-up eventfd, went on, and the
    process said "stopped" but never exited."""
    node = C.Node("n1").start()
    try:
        d = T.tmpdir()
        started, refused = set(), set()
        for nofile in range(12, 31):  # every limit: where it hangs depends on what is open
            cmds = {
                "edge": ["edge", "--region", "r1", "--listen", "%s:%d" % (T.HOST, T.free_port()),
                         "--nodes", node.addr],
                "dev": ["dev", "--listen", "%s:%d" % (T.HOST, T.free_port()),
                        "--data", os.path.join(d, "dev%d" % nofile)],
            }
            for what, args in cmds.items():
                label = "%s with ulimit -n %d" % (what, nofile)
                errf = os.path.join(d, "err-%s-%d" % (what, nofile))
                with open(errf, "wb") as ef:
                    p = subprocess.Popen([T.TERN] + args, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=ef,
                                         preexec_fn=nofile_limit(nofile))
                try:
                    t_end = time.monotonic() + 10
                    while p.poll() is None and time.monotonic() < t_end:
                        with open(errf, "rb") as ef:
                            if b"listening on" in ef.read():
                                break
                        time.sleep(0.05)
                    if p.poll() is None:
                        started.add((what, nofile))
                        time.sleep(0.3)  # its links come up, as in a real start
                        p.send_signal(signal.SIGTERM)
                        try:
                            rc = p.wait(15)
                        except subprocess.TimeoutExpired:
                            raise T.TestFailure("%s: still running 15 s after SIGTERM" % label)
                        check_eq(rc, 0, "%s: exit code after SIGTERM" % label)
                    else:
                        refused.add((what, nofile))
                        err = open(errf, "rb").read().decode(errors="replace")
                        check_eq(p.returncode, 1, "%s: exit code of a start that failed" % label, err)
                        check("open files" in err or "unable to open" in err or "cannot" in err,
                              "%s says why" % label, err)
                finally:
                    if p.poll() is None:
                        p.kill()
                        p.wait()
        for what in ("edge", "dev"):
            check(any(w == what for w, _ in started) and any(w == what for w, _ in refused),
                  "%s both started and was refused over these limits" % what, (started, refused))
    finally:
        node.stop()
        node.cleanup()


def test_bad_starts_say_why_and_leave_nothing_behind():
    node = C.Node("n1").start()
    held = socket.socket()
    try:
        held.bind((T.HOST, 0))
        held.listen(1)
        port = held.getsockname()[1]
        t0 = time.monotonic()
        r = run_tern(["edge", "--region", "r1", "--listen", "%s:%d" % (T.HOST, port),
                      "--nodes", node.addr, "--workers", "2"])
        err = r.stderr.decode()
        check_eq(r.returncode, 1, "exit code with the port held by another socket", err)
        check("cannot listen on %s:%d: Address already in use" % (T.HOST, port) in err,
              "the worker says why", err)
        check("before listening" in err, "the supervisor says the worker failed to start", err)
        check(time.monotonic() - t0 < 10, "fails fast")
        for bad in ("0", "65", "x"):
            r = run_tern(["edge", "--region", "r1", "--listen", "%s:%d" % (T.HOST, T.free_port()),
                          "--nodes", node.addr, "--workers", bad])
            err = r.stderr.decode()
            check_eq(r.returncode, 2, "exit code for --workers %s" % bad, err)
            check(err.startswith("tern: workers") and err.count("\n") == 1,
                  "one line naming the key for --workers %s" % bad, err)
        conf = os.path.join(T.tmpdir(), "dev.conf")
        with open(conf, "w") as f:
            f.write("workers 2\n")
        r = run_tern(["dev", "--listen", "%s:%d" % (T.HOST, T.free_port()), "--config", conf,
                      "--data", os.path.join(T.tmpdir(), "d")])
        err = r.stderr.decode()
        check_eq(r.returncode, 2, "tern dev with workers 2 in its config", err)
        check("tern dev is one process" in err, "tern dev says to use tern edge --workers", err)
        r = run_tern(["dev", "--workers", "2"])
        check_eq(r.returncode, 2, "tern dev --workers is not a flag", r.stderr.decode())
    finally:
        held.close()
        node.stop()
        node.cleanup()


if __name__ == "__main__":
    T.main(globals())
