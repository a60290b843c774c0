"""Helpers for the cluster integration tests (test_cluster_*.py): real
`tern node` and `tern edge` processes on free 127.0.0.1 ports, joined by links.

  tern node --id ID --region R --listen HOST:PORT --data DIR [--config FILE]
      links and HTTP (/healthz, /metrics) on the same port
  tern edge --region R --listen HOST:PORT --nodes HOST:PORT,.. [--links K] [--id ID] [--workers W]
            [--config FILE]
      the client contract (WebSocket /v1/ws, REST), /healthz 200 when a node link is up

Built on ternlib.py (TERN, checks, http, Client). Every process is started and
ended by its PID (SIGTERM/SIGKILL/SIGSTOP/SIGCONT to that PID only); a process
still running when the script exits is SIGCONT'ed and SIGKILLed by PID; temp
dirs are removed. Every wait is bounded in time.

Also runnable as a load generator (a separate process, so the load does not
share the test's Python interpreter):
  python3 clusterlib.py flood WS_URL CHANNEL_PREFIX SECONDS CONNS WINDOW MAX_COUNT
prints one JSON line {"ok": N, "errors": {code: N}, "closed": N, "elapsed": s}.
"""

import asyncio
import atexit
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import ternlib as T
from ternlib import check, check_eq, HOST

REGION = "r1"

_PROCS = []  # every Proc started, for the exit-time cleanup


@atexit.register
def _kill_leftovers():
    for p in _PROCS:
        if p.proc is not None and p.proc.poll() is None:
            try:
                os.kill(p.proc.pid, signal.SIGCONT)
                os.kill(p.proc.pid, signal.SIGKILL)
                p.proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                pass


def write_config(path, config):
    with open(path, "w") as f:
        f.write("# written by clusterlib.py\n")
        for k, v in config.items():
            f.write("%s %s\n" % (k, v))
    return path


class Proc:
    """One `tern node` or `tern edge` process (subclasses give argv())."""

    kind = "proc"

    def __init__(self, name, config=None, port=None):
        self.name = name
        self.config = dict(config or {})
        self.port = port or T.free_port()
        self.port_given = port is not None
        self.was_healthy = False  # once it was, restarts keep the port
        self.tmp = T.tmpdir("tern-cl-%s-" % name)
        self.proc = None
        self.starts = 0
        self.stderr_path = None
        self.last_rc = None
        _PROCS.append(self)

    @property
    def addr(self):
        return "%s:%d" % (HOST, self.port)

    @property
    def base(self):
        return "http://%s" % self.addr

    @property
    def ws_url(self):
        return "ws://%s/v1/ws" % self.addr

    @property
    def pid(self):
        return self.proc.pid if self.proc is not None else None

    def config_args(self):
        if not self.config:
            return []
        return ["--config", write_config(os.path.join(self.tmp, "tern.conf"), self.config)]

    def argv(self):
        raise NotImplementedError

    def start(self, wait=True, timeout=None):
        """Starts the process; with wait, until /healthz answers 200."""
        check(self.proc is None, "%s already running" % self.name)
        self._spawn()
        if wait:
            self.wait_health(200, timeout or T.START_S)
        return self

    def _spawn(self):
        self.starts += 1
        self.stderr_path = os.path.join(self.tmp, "stderr.%d.log" % self.starts)
        errf = open(self.stderr_path, "wb")
        outf = open(os.path.join(self.tmp, "stdout.%d.log" % self.starts), "wb")
        self.proc = subprocess.Popen(self.argv(), stdout=outf, stderr=errf, stdin=subprocess.DEVNULL)
        errf.close()
        outf.close()

    def _port_taken(self):
        """The first start of a process on a port we picked ended because
        something took the port between the pick and the bind (another test's
        connection, say): pick another and start again, as ternlib.Server does."""
        if self.port_given or self.was_healthy or self.starts >= 3:
            return False
        if "Address already in use" not in self.stderr():
            return False
        self.proc.wait()
        self.proc = None
        self.port = T.free_port()
        self._spawn()
        return True

    def health(self, timeout=1.0):
        """The /healthz status, or None when nothing answered in time."""
        try:
            with urllib.request.urlopen(self.base + "/healthz", timeout=timeout) as r:
                return r.status
        except urllib.error.HTTPError as e:
            return e.code
        except (urllib.error.URLError, ConnectionError, OSError):
            return None

    def wait_health(self, want=200, timeout=None):
        timeout = T.START_S if timeout is None else timeout
        deadline = time.monotonic() + timeout
        got = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None and self._port_taken():
                continue
            if self.proc is not None and self.proc.poll() is not None:
                raise T.TestFailure("%s (%s) exited %r while waiting for /healthz %d; argv %r; stderr: %s"
                                    % (self.name, self.kind, self.proc.returncode, want, self.argv(),
                                       self.stderr()[-2000:]))
            got = self.health()
            if got == want:
                self.was_healthy = self.was_healthy or want == 200
                return time.monotonic()
            time.sleep(0.05)
        raise T.TestFailure("%s (%s): /healthz not %d within %ss (last %r); stderr: %s"
                            % (self.name, self.kind, want, timeout, got, self.stderr()[-2000:]))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, sig):
        check(self.proc is not None, "%s not running" % self.name)
        os.kill(self.proc.pid, sig)

    def stop(self, sig=signal.SIGTERM, timeout=None, expect_rc=0, send=True):
        """Sends sig to our PID (unless send=False: already signalled) and
        waits; asserts the exit code; returns it."""
        if self.proc is None:
            return None
        timeout = T.STOP_S if timeout is None else timeout
        proc = self.proc
        if send and proc.poll() is None:
            os.kill(proc.pid, sig)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGCONT)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            self.proc = None
            raise T.TestFailure("%s did not exit within %ss of signal %d; stderr tail: %s"
                                % (self.name, timeout, sig, self.stderr()[-2000:]))
        self.proc = None
        self.last_rc = rc
        if expect_rc is not None and rc != expect_rc:
            raise T.TestFailure("%s exited %r after signal %d, want %r; stderr tail: %s"
                                % (self.name, rc, sig, expect_rc, self.stderr()[-3000:]))
        return rc

    def kill(self):
        """SIGKILL by PID (a crash)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            os.kill(self.proc.pid, signal.SIGKILL)
        self.last_rc = self.proc.wait(timeout=T.STOP_S)
        self.proc = None

    def cleanup(self):
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    os.kill(self.proc.pid, signal.SIGCONT)
                    os.kill(self.proc.pid, signal.SIGKILL)
                except OSError:
                    pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None

    def stderr(self):
        return T.read_text(self.stderr_path)

    def all_stderr(self):
        out = []
        for i in range(1, self.starts + 1):
            p = os.path.join(self.tmp, "stderr.%d.log" % i)
            if os.path.exists(p):
                out.append(T.read_text(p))
        return "\n".join(out)

    # --- HTTP
    def http(self, method, path, body=None, raw=None, headers=None, timeout=T.WAIT_S):
        return T.http(method, self.base + path, body=body, raw=raw, headers=headers, timeout=timeout)

    def metrics_text(self, timeout=T.WAIT_S):
        status, _, text = self.http("GET", "/metrics", timeout=timeout)
        check_eq(status, 200, "%s GET /metrics status" % self.name)
        check(isinstance(text, str), "%s /metrics is text" % self.name, text)
        return text

    def metrics(self, timeout=T.WAIT_S):
        return T.parse_metrics(self.metrics_text(timeout))

    # --- /proc
    def sockets(self):
        """(total, listening, inodes): entries of /proc/PID/fd that are sockets
        ("socket:[inode]"); listening ones found through /proc/PID/net/tcp{,6}."""
        check(self.alive(), "%s is running" % self.name)
        pid = self.proc.pid
        inodes = []
        fddir = "/proc/%d/fd" % pid
        for fd in os.listdir(fddir):
            try:
                target = os.readlink(os.path.join(fddir, fd))
            except OSError:
                continue
            m = re.match(r"^socket:\[(\d+)\]$", target)
            if m:
                inodes.append(m.group(1))
        listening = set()
        for table in ("tcp", "tcp6"):
            try:
                with open("/proc/%d/net/%s" % (pid, table)) as f:
                    next(f)
                    for line in f:
                        parts = line.split()
                        if len(parts) > 9 and parts[3] == "0A":
                            listening.add(parts[9])
            except OSError:
                pass
        return len(inodes), sum(1 for i in inodes if i in listening), inodes

    def cpu_seconds(self):
        """utime + stime of the process so far, in seconds."""
        with open("/proc/%d/stat" % self.proc.pid) as f:
            fields = f.read().rpartition(")")[2].split()
        ticks = os.sysconf(os.sysconf_names["SC_CLK_TCK"])
        return (int(fields[11]) + int(fields[12])) / float(ticks)


class Node(Proc):
    kind = "node"

    def __init__(self, node_id="n1", config=None, port=None, data_dir=None, region=REGION):
        super().__init__(node_id, config, port)
        self.node_id = node_id
        self.region = region
        self.data_dir = data_dir or os.path.join(self.tmp, "data")

    def argv(self):
        return [T.TERN, "node", "--id", self.node_id, "--region", self.region,
                "--listen", self.addr, "--data", self.data_dir] + self.config_args()

    def link_counts(self):
        """(control, data) from tern_node_links{plane=...}; None when absent."""
        m = self.metrics()
        return m.get('tern_node_links{plane="control"}'), m.get('tern_node_links{plane="data"}')


class Edge(Proc, T.RestApi):
    kind = "edge"

    def __init__(self, name, nodes, config=None, port=None, links=None, region=REGION, edge_id=None,
                 workers=None):
        super().__init__(name, config, port)
        self.nodes = list(nodes)
        self.links = links
        self.workers = workers
        self.region = region
        self.edge_id = edge_id

    def argv(self):
        addrs = ",".join(n.addr if isinstance(n, Proc) else n for n in self.nodes)
        a = [T.TERN, "edge", "--region", self.region, "--listen", self.addr, "--nodes", addrs]
        if self.links is not None:
            a += ["--links", str(self.links)]
        if self.edge_id:
            a += ["--id", self.edge_id]
        if self.workers is not None:
            a += ["--workers", str(self.workers)]
        return a + self.config_args()

    def node_metric(self, m, name, node):
        return m.get('%s{node="%s"}' % (name, node.addr if isinstance(node, Proc) else node))



class Cluster:
    """One node and n edges, all linked to it. Context manager: on a clean exit
    stops edges then the node with SIGTERM asserting exit 0; always SIGKILLs by
    PID whatever is left."""

    def __init__(self, edges=2, links=None, config=None, edge_config=None, node_config=None):
        cfg = dict(config or {})
        self.node = Node("n1", dict(cfg, **(node_config or {})))
        self.edges = [Edge("edge%s" % chr(ord("A") + i), [self.node], dict(cfg, **(edge_config or {})),
                           links=links) for i in range(edges)]

    def start(self):
        self.node.start()
        for e in self.edges:
            e.start(wait=False)
        for e in self.edges:
            e.wait_health(200)
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, et, ev, tb):
        try:
            if et is None:
                for e in self.edges:
                    if e.proc is not None:
                        e.stop()
                if self.node.proc is not None:
                    self.node.stop()
        finally:
            for p in self.edges + [self.node]:
                p.cleanup()
        return False


# --------------------------------------------------------------------------- waits

async def expect_all_closed(clients, code, what, timeout=10):
    """Every client's connection is closed by the server with `code`."""
    for i, c in enumerate(clients):
        _, got, reason = await c.expect_close(timeout=timeout)
        check_eq(got, code, "client %d: close code %s (reason %r)" % (i, what, reason))


def wait_until(fn, timeout, what, interval=0.05):
    """Polls fn() until truthy (returns it) or fails after timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = fn()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise T.TestFailure("timed out after %ss waiting for %s (last %r)" % (timeout, what, last))
        time.sleep(interval)


def wait_sockets(node, want_total, timeout=10.0):
    """Waits until the node holds exactly want_total sockets and stays so for a
    short while (no HTTP to the node meanwhile: that would be one more)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = node.sockets()
        if last[0] == want_total:
            time.sleep(0.3)
            again = node.sockets()
            if again[0] == want_total:
                return again
            last = again
        time.sleep(0.1)
    return last


def rest_publish_probe(edge, channel, data, timeout):
    """One REST publish with a short client timeout: ("ok", seq, dt) /
    ("error", body, dt, status) / ("timeout", None, dt)."""
    t0 = time.monotonic()
    try:
        status, _, body = edge.http("POST", "/v1/channels/%s/messages" % T.quote(channel),
                                    body={"data": data}, timeout=timeout)
    except (urllib.error.URLError, ConnectionError, OSError, TimeoutError) as e:
        return ("timeout", repr(e), time.monotonic() - t0, None)
    dt = time.monotonic() - t0
    if status == 201:
        return ("ok", body["messages"][0]["seq"], dt, status)
    return ("error", body, dt, status)


def check_contiguous(seqs, what, first=None, last=None):
    """seqs are exactly first, first+1, ..., last (in order, no gap, no duplicate)."""
    check(seqs, what + ": some messages", seqs)
    lo = seqs[0] if first is None else first
    hi = seqs[-1] if last is None else last
    want = list(range(lo, hi + 1))
    if seqs != want:
        dup = sorted({s for s in seqs if seqs.count(s) > 1})[:10]
        missing = sorted(set(want) - set(seqs))[:20]
        out_of_order = [(a, b) for a, b in zip(seqs, seqs[1:]) if b <= a][:10]
        raise T.TestFailure("%s: seqs not exactly %d..%d: got %d seqs, first %r last %r; missing %r; "
                            "duplicates %r; out of order %r"
                            % (what, lo, hi, len(seqs), seqs[0], seqs[-1], missing, dup, out_of_order))


async def collect_until(c, channel, last_seq, timeout, seqs=None):
    """Reads messages of channel on client c into seqs until one with seq >=
    last_seq arrived (or timeout); returns the seqs list."""
    seqs = [] if seqs is None else seqs
    deadline = time.monotonic() + timeout
    while not seqs or seqs[-1] < last_seq:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            m = await c.message(channel, timeout=left)
        except T.TestFailure:
            break
        seqs.append(m["seq"])
    return seqs


# --------------------------------------------------------------------------- load generator

async def _flood(url, prefix, seconds, conns, window, max_count):
    import websockets
    stats = {"ok": 0, "errors": {}, "closed": 0, "connect_failed": 0}
    deadline = time.monotonic() + seconds
    budget = [max_count]

    async def one(i):
        try:
            ws = await asyncio.wait_for(websockets.connect(
                url, subprotocols=[T.SUBPROTOCOL], ping_interval=None, compression=None,
                max_size=2 ** 22), 10)
        except Exception:
            stats["connect_failed"] += 1
            return
        try:
            await asyncio.wait_for(ws.recv(), 10)  # connected
            ch = "%s:%d" % (prefix, i % 16)
            ref = 0
            inflight = 0
            payload = {"i": i, "pad": "x" * 200}
            while True:
                while inflight < window and budget[0] > 0 and time.monotonic() < deadline:
                    ref += 1
                    budget[0] -= 1
                    inflight += 1
                    await ws.send(json.dumps({"op": "publish", "ref": ref, "channel": ch, "data": payload}))
                if inflight == 0:
                    break
                left = deadline + 10 - time.monotonic()
                if left <= 0:
                    break
                text = await asyncio.wait_for(ws.recv(), left)
                f = json.loads(text)
                if f.get("op") == "ok":
                    inflight -= 1
                    stats["ok"] += 1
                elif f.get("op") == "error":
                    inflight -= 1
                    code = str(f.get("error", {}).get("code"))
                    stats["errors"][code] = stats["errors"].get(code, 0) + 1
        except websockets.ConnectionClosed:
            stats["closed"] += 1
        except asyncio.TimeoutError:
            stats["errors"]["client_timeout"] = stats["errors"].get("client_timeout", 0) + 1
        finally:
            try:
                await asyncio.wait_for(ws.close(), 5)
            except Exception:
                pass

    def rest_worker(i):
        """REST batches of 100 publishes on one keep-alive connection."""
        import http.client
        host, _, port = url.split("//", 1)[1].split("/", 1)[0].partition(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        body = json.dumps([{"data": {"r": i, "pad": "y" * REST_PAD}}] * 100)
        path = "/v1/channels/%s/messages" % urllib.parse.quote("%s:rest%d" % (prefix, i % 4), safe="")
        try:
            while time.monotonic() < deadline and budget[0] > 0:
                budget[0] -= 100
                conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                r = conn.getresponse()
                r.read()
                if r.status == 201:
                    stats["ok"] += 100
                else:
                    k = "http%d" % r.status
                    stats["errors"][k] = stats["errors"].get(k, 0) + 1
        except OSError as e:
            stats["errors"]["rest_" + type(e).__name__] = stats["errors"].get("rest_" + type(e).__name__, 0) + 1
        finally:
            conn.close()

    t0 = time.monotonic()
    loop = asyncio.get_running_loop()
    rest = [loop.run_in_executor(None, rest_worker, i) for i in range(REST_THREADS)]
    await asyncio.gather(*(one(i) for i in range(conns)), *rest)
    stats["elapsed"] = round(time.monotonic() - t0, 2)
    return stats


REST_THREADS = int(os.environ.get("TERN_IT_FLOOD_REST_THREADS", "3"))  # per generator, beside the WS publishers
REST_PAD = int(os.environ.get("TERN_IT_FLOOD_REST_PAD", "2000"))  # bytes of padding per REST-published message


def start_flood(ws_url, prefix, seconds, conns, window, max_count):
    """Starts the load generator as its own process; returns the Popen."""
    return subprocess.Popen([sys.executable, os.path.abspath(__file__), "flood", ws_url, prefix,
                             str(seconds), str(conns), str(window), str(max_count)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONDONTWRITEBYTECODE="1"))


def finish_flood(p, timeout):
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.kill(p.pid, signal.SIGKILL)
        out, err = p.communicate()
        raise T.TestFailure("load generator did not finish in %ss; stderr %r" % (timeout, err[-500:]))
    check_eq(p.returncode, 0, "load generator exit code (stderr %r)" % (err[-1000:],))
    return json.loads(out.decode().strip().splitlines()[-1])


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "flood":
    _url, _prefix, _secs, _conns, _window, _max = sys.argv[2:8]
    res = asyncio.run(_flood(_url, _prefix, float(_secs), int(_conns), int(_window), int(_max)))
    print(json.dumps(res))
