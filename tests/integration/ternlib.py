"""Shared helpers for Tern's integration tests.

Every test script is run as `/usr/bin/python3 test_x.py /path/to/tern` (see
integration.cmake). It starts real `tern dev` processes on free loopback ports
with temp data dirs, drives them with real clients (python3-websockets, curl,
urllib, a raw socket WebSocket client) and stops them by PID with SIGTERM,
asserting exit code 0 (so a leak under AddressSanitizer fails the test).

Rules kept here: only 127.0.0.1, every wait bounded in time, every process we
start is ended by its PID, never by name.

Split mode (TERN_IT_MODE=split, or Server(mode="split")): a Server is a
`tern node` (free port, data_dir, kept across restarts) plus a `tern edge
--nodes` on the Server's port; stop() SIGTERMs the edge then the node, kill()
SIGKILLs both, send_signal() goes to the edge (the process clients talk to),
proc.poll() notices either exiting, metrics() adds the node's series and
stderr() is the edge's then the node's. SPLIT_SKIP names the few tests that
check what only `tern dev` has.
"""

import asyncio
import atexit
import base64
import inspect
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request

import websockets  # Debian python3-websockets (10.4)

HOST = "127.0.0.1"
SUBPROTOCOL = "tern.v1.json"
# Generous: the suite also runs against AddressSanitizer builds on a busy 2-core box.
WAIT_S = float(os.environ.get("TERN_IT_WAIT_S", "20"))
START_S = float(os.environ.get("TERN_IT_START_S", "30"))
STOP_S = float(os.environ.get("TERN_IT_STOP_S", "30"))

TERN = None  # path of the binary, set by main()


class TestFailure(AssertionError):
    pass


def check(cond, what, *detail):
    """Assert that is never compiled out; `detail` is shown on failure."""
    if not cond:
        extra = " | ".join(repr(d) for d in detail)
        raise TestFailure(what + ((" | " + extra) if extra else ""))


def check_eq(got, want, what, *detail):
    if got != want:
        extra = " | ".join(repr(d) for d in detail)
        raise TestFailure("%s: got %r, want %r%s" % (what, got, want, (" | " + extra) if extra else ""))


_TMPDIRS = []


def tmpdir(prefix="tern-it-"):
    """A temp dir removed when the script exits."""
    d = tempfile.mkdtemp(prefix=prefix)
    _TMPDIRS.append(d)
    return d


@atexit.register
def _remove_tmpdirs():
    for d in _TMPDIRS:
        shutil.rmtree(d, ignore_errors=True)


def free_port():
    """A port that was free on 127.0.0.1 a moment ago (the kernel's pick)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind((HOST, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def one_line(text):
    """The non-empty lines of `text` (stderr checks: 'one clear line')."""
    return [l for l in text.splitlines() if l.strip()]


# --------------------------------------------------------------------------- server

class RestApi:
    """REST helpers over self.http(method, path, ...): for a Server, and for a
    cluster edge (clusterlib.Edge)."""

    def publish_rest(self, channel, msgs, timeout=WAIT_S):
        status, _, body = self.http("POST", "/v1/channels/%s/messages" % quote(channel), body=msgs,
                                    timeout=timeout)
        check_eq(status, 201, "POST messages status (body %r)" % (body,))
        return body["messages"]

    def channel_info(self, channel):
        status, _, body = self.http("GET", "/v1/channels/%s" % quote(channel))
        check_eq(status, 200, "GET channel status")
        return body

    def history(self, channel, **params):
        q = urllib.parse.urlencode(params)
        status, _, body = self.http("GET", "/v1/channels/%s/messages%s" % (quote(channel), "?" + q if q else ""))
        check_eq(status, 200, "GET messages status (body %r)" % (body,))
        return body["messages"]

    def full_history(self, channel, page=100):
        """Every retained message, oldest first, paging forwards with from_seq."""
        out = []
        after = None
        for _ in range(10000):
            params = {"limit": page}
            if after is not None:
                params["from_seq"] = after
            msgs = self.history(channel, **params)
            if not msgs:
                break
            out.extend(msgs)
            after = msgs[-1]["seq"]
        return out


class Server(RestApi):
    """One `tern dev` process. Use as a context manager or call start()/stop()."""

    def __init__(self, config=None, data_dir=None, port=None, extra_args=None, env=None, mode=None):
        # mode "dev" (default): one `tern dev`. mode "split" (or env TERN_IT_MODE=split):
        # a `tern node` on a free port with data_dir, and a `tern edge --nodes` on `port`;
        # see _start_split. Properties (base, ws_url, data_dir) are the same.
        self.mode = mode or os.environ.get("TERN_IT_MODE", "dev") or "dev"
        check(self.mode in ("dev", "split"), "Server mode is dev or split", self.mode)
        self.node_port = None  # split: kept across restarts, like port
        self.config = dict(config or {})
        self.own_tmp = tempfile.mkdtemp(prefix="tern-it-")
        _TMPDIRS.append(self.own_tmp)  # also removed at exit when start() failed or a filter skipped the stop
        self.data_dir = data_dir or os.path.join(self.own_tmp, "data")
        self.port = port
        self.extra_args = list(extra_args or [])
        self.env = env
        self.proc = None
        self.stderr_path = None
        self.stdout_path = None
        self.starts = 0

    # addresses
    @property
    def base(self):
        return "http://%s:%d" % (HOST, self.port)

    @property
    def ws_url(self):
        return "ws://%s:%d/v1/ws" % (HOST, self.port)

    def config_args(self):
        if not self.config:
            return []
        path = os.path.join(self.own_tmp, "tern.conf")
        with open(path, "w") as f:
            f.write("# written by ternlib.py\n")
            for k, v in self.config.items():
                f.write("%s %s\n" % (k, v))
        return ["--config", path]

    def command(self):
        cmd = [TERN, "dev", "--listen", "%s:%d" % (HOST, self.port), "--data", self.data_dir]
        return cmd + self.config_args() + self.extra_args

    def node_command(self):
        return [TERN, "node", "--id", "n1", "--region", "it", "--listen", "%s:%d" % (HOST, self.node_port),
                "--data", self.data_dir] + self.config_args()

    def edge_command(self):
        return [TERN, "edge", "--region", "it", "--listen", "%s:%d" % (HOST, self.port),
                "--nodes", "%s:%d" % (HOST, self.node_port)] + self.config_args() + self.extra_args

    def start(self, port=None):
        """Starts the process and waits until /healthz answers 200."""
        check(self.proc is None, "server already running")
        fixed_port = port or self.port
        if self.mode == "split":
            return self._start_split(fixed_port)
        last_err = ""
        for attempt in range(3):
            self.port = fixed_port or free_port()
            self.starts += 1
            self.stderr_path = os.path.join(self.own_tmp, "stderr.%d.log" % self.starts)
            self.stdout_path = os.path.join(self.own_tmp, "stdout.%d.log" % self.starts)
            errf = open(self.stderr_path, "wb")
            outf = open(self.stdout_path, "wb")
            self.proc = subprocess.Popen(self.command(), stdout=outf, stderr=errf,
                                         stdin=subprocess.DEVNULL, env=self.env)
            errf.close()
            outf.close()
            if self.wait_healthy():
                return self
            rc = self.proc.poll()
            last_err = self.stderr()
            if rc is None:
                self.proc.kill()
                self.proc.wait()
                self.proc = None
                raise TestFailure("tern dev did not become healthy within %ss; stderr: %s"
                                  % (START_S, last_err[-2000:]))
            self.proc = None
            # Exited during start: maybe someone took the port between our pick and its bind.
            if fixed_port or "use" not in last_err.lower():
                break
        raise TestFailure("tern dev exited during start; stderr: %s" % last_err[-2000:])

    def _spawn(self, argv, tag):
        errp = os.path.join(self.own_tmp, "%s.%d.log" % (tag, self.starts))
        outp = os.path.join(self.own_tmp, "%s-stdout.%d.log" % (tag, self.starts))
        errf = open(errp, "wb")
        outf = open(outp, "wb")
        p = subprocess.Popen(argv, stdout=outf, stderr=errf, stdin=subprocess.DEVNULL, env=self.env)
        errf.close()
        outf.close()
        return p, errp

    def _start_split(self, fixed_port):
        """Split mode: `tern node` (free port, kept across restarts; data_dir),
        healthy first, then `tern edge --nodes` on our port, healthy (its node
        link up). self.proc is then a _Pair (poll/returncode/pid of both)."""
        last_err = ""
        for attempt in range(3):
            fixed_node = self.node_port is not None
            if not fixed_node:
                self.node_port = free_port()
            self.port = fixed_port or free_port()
            self.starts += 1
            node, node_err = self._spawn(self.node_command(), "node-stderr")
            self.stderr_path = node_err
            self.proc = _Pair(None, node)
            if not self.wait_healthy("http://%s:%d" % (HOST, self.node_port)):
                last_err = read_text(node_err)
                self._kill_split()
                if fixed_node or "in use" not in last_err.lower():
                    raise TestFailure("tern node did not become healthy within %ss (or exited); stderr: %s"
                                      % (START_S, last_err[-2000:]))
                self.node_port = None
                continue
            edge, edge_err = self._spawn(self.edge_command(), "stderr")
            self.proc = _Pair(edge, node)
            self.stderr_path = edge_err
            if self.wait_healthy():
                return self
            last_err = "edge: %s\nnode: %s" % (read_text(edge_err)[-2000:], read_text(node_err)[-1000:])
            edge_rc = edge.poll()
            self._kill_split()
            if edge_rc is None or fixed_port or "in use" not in last_err.lower():
                raise TestFailure("tern edge did not become healthy within %ss (or exited %r); %s"
                                  % (START_S, edge_rc, last_err))
        raise TestFailure("split mode: could not start; %s" % last_err[-3000:])

    def _kill_split(self):
        pair = self.proc
        self.proc = None
        if pair is None:
            return
        for p in (pair.edge, pair.node):
            if p is not None and p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
            if p is not None:
                p.wait(timeout=STOP_S)

    def _stop_split(self, sig, timeout, expect_rc, send):
        """Edge first (sig, unless send=False: already signalled), then the node (sig)."""
        pair = self.proc
        rcs = []
        for p, what, do_send in ((pair.edge, "tern edge", send), (pair.node, "tern node", True)):
            if p is None:
                continue
            if do_send and p.poll() is None:
                os.kill(p.pid, sig)
            try:
                rc = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self._kill_split()
                raise TestFailure("%s did not exit within %ss of signal %d; stderr tail: %s"
                                  % (what, timeout, sig, self.stderr()[-3000:]))
            rcs.append((what, rc))
        self.proc = None
        for what, rc in rcs:
            if expect_rc is not None and rc != expect_rc:
                raise TestFailure("%s exited %r after signal %d, want %r; stderr tail: %s"
                                  % (what, rc, sig, expect_rc, self.stderr()[-3000:]))
        return rcs[0][1] if rcs else None

    def wait_healthy(self, base=None):
        deadline = time.monotonic() + START_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            try:
                with urllib.request.urlopen((base or self.base) + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return True
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.05)
        return False

    def stderr(self):
        """stderr of the current (or last) start; in split mode the edge's, then the node's."""
        if self.mode == "split":
            return "\n".join(read_text(os.path.join(self.own_tmp, "%s.%d.log" % (t, self.starts)))
                             for t in ("stderr", "node-stderr"))
        return read_text(self.stderr_path)

    def all_stderr(self):
        out = []
        for i in range(1, self.starts + 1):
            for tag in (("stderr", "node-stderr") if self.mode == "split" else ("stderr",)):
                p = os.path.join(self.own_tmp, "%s.%d.log" % (tag, i))
                if os.path.exists(p):
                    out.append(read_text(p))
        return "\n".join(out)

    def send_signal(self, sig):
        check(self.proc is not None, "server not running")
        os.kill(self.proc.pid, sig)

    def stop(self, sig=signal.SIGTERM, timeout=STOP_S, expect_rc=0, send=True):
        """Sends `sig` to our PID (unless send=False: already signalled) and
        waits; asserts the exit code. Returns it."""
        if self.proc is None:
            return None
        if self.mode == "split":
            return self._stop_split(sig, timeout, expect_rc, send)
        proc = self.proc
        if send and proc.poll() is None:
            os.kill(proc.pid, sig)
        try:
            rc = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            self.proc = None
            raise TestFailure("tern dev did not exit within %ss of signal %d; stderr tail: %s"
                              % (timeout, sig, self.stderr()[-2000:]))
        self.proc = None
        if expect_rc is not None and rc != expect_rc:
            raise TestFailure("tern dev exited %r after signal %d, want %r; stderr tail: %s"
                              % (rc, sig, expect_rc, self.stderr()[-3000:]))
        return rc

    def kill(self):
        """SIGKILL by PID: a crash, nothing drained."""
        if self.proc is None:
            return
        if self.mode == "split":
            return self._kill_split()
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=STOP_S)
        self.proc = None

    def cleanup(self):
        if self.mode == "split":
            self._kill_split()
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None
        shutil.rmtree(self.own_tmp, ignore_errors=True)

    def __enter__(self):
        return self.start()

    def __exit__(self, et, ev, tb):
        try:
            if et is None:
                self.stop()
        finally:
            self.cleanup()
        return False

    # --- HTTP
    def http(self, method, path, body=None, raw=None, headers=None, timeout=WAIT_S):
        return http(method, self.base + path, body=body, raw=raw, headers=headers, timeout=timeout)

    def metrics(self):
        """Parsed /metrics. Split mode: the edge's, plus the node's series the
        edge does not have (the store and queue metrics live on the node)."""
        status, _, text = self.http("GET", "/metrics")
        check_eq(status, 200, "GET /metrics status")
        m = parse_metrics(text)
        if self.mode == "split" and self.node_port is not None:
            status, _, ntext = http("GET", "http://%s:%d/metrics" % (HOST, self.node_port))
            check_eq(status, 200, "node GET /metrics status")
            for k, v in parse_metrics(ntext).items():
                m.setdefault(k, v)
        return m


def read_text(path):
    """A log file's text ('' when there is none)."""
    if not path or not os.path.exists(path):
        return ""
    with open(path, "rb") as f:
        return f.read().decode("utf-8", "replace")


class _Pair:
    """Split mode's self.proc: the edge and the node as one process for the
    checks tests make (poll() and returncode: the first exit of either; pid:
    the edge's, which serves the clients)."""

    def __init__(self, edge, node):
        self.edge = edge
        self.node = node

    def poll(self):
        for p in (self.edge, self.node):
            if p is not None and p.poll() is not None:
                return p.returncode
        return None

    @property
    def returncode(self):
        return self.poll()

    @property
    def pid(self):
        return (self.edge or self.node).pid


class Shared:
    """One server shared by the tests of a file. If a test kills it (a crash),
    the next test gets a fresh one, so one crash fails one test, not all after it;
    finish() then fails too, naming the crash."""

    def __init__(self, **kw):
        self.kw = kw
        self.srv = None
        self.crashes = []

    def get(self):
        if self.srv is not None and self.srv.proc is not None and self.srv.proc.poll() is not None:
            self.crashes.append("exit %r; stderr tail: %s" % (self.srv.proc.returncode, self.srv.stderr()[-1500:]))
            self.srv.proc = None
            self.srv.cleanup()
            self.srv = None
        if self.srv is None:
            self.srv = Server(**self.kw).start()
        return self.srv

    def finish(self):
        """Stops the server with SIGTERM, asserting exit 0, and that none crashed."""
        try:
            if self.srv is not None:
                self.get()  # notices a crash in the last test
            if self.srv is not None:
                self.srv.stop()
        finally:
            self.cleanup()
        check(not self.crashes, "the shared server crashed during this file's tests", *self.crashes)

    def cleanup(self):
        if self.srv is not None:
            self.srv.cleanup()
            self.srv = None


def quote(name):
    return urllib.parse.quote(name, safe="")


def http(method, url, body=None, raw=None, headers=None, timeout=WAIT_S):
    """(status, headers, parsed JSON or text). `body` is JSON-encoded; `raw` is sent as is."""
    data = None
    hdrs = dict(headers or {})
    if body is not None:
        data = json.dumps(body, ensure_ascii=False).encode()
        hdrs.setdefault("Content-Type", "application/json")
    elif raw is not None:
        data = raw if isinstance(raw, bytes) else raw.encode()
        hdrs.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=hdrs)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, rh, payload = r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        status, rh, payload = e.code, dict(e.headers), e.read()
    text = payload.decode("utf-8", "replace")
    ctype = {k.lower(): v for k, v in rh.items()}.get("content-type", "")
    if "json" in ctype or text[:1] in ("{", "["):
        try:
            return status, rh, json.loads(text)
        except ValueError:
            pass
    return status, rh, text


def curl(*args, data=None, timeout=WAIT_S):
    """Runs curl; returns (http_code, body text). -sS, body to stdout, code last line."""
    cmd = ["curl", "-sS", "--max-time", str(int(timeout)), "-w", "\n%{http_code}"]
    if data is not None:
        cmd += ["--data-binary", "@-"]
    cmd += list(args)
    p = subprocess.run(cmd, input=data.encode() if isinstance(data, str) else data,
                       capture_output=True, timeout=timeout + 10)
    check_eq(p.returncode, 0, "curl exit code (%s) stderr %r" % (" ".join(cmd), p.stderr))
    out = p.stdout.decode("utf-8", "replace")
    body, _, code = out.rpartition("\n")
    return int(code), body


def parse_metrics(text):
    """{name_with_labels: float} from Prometheus text format."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(None, 1)
        if len(parts) != 2:
            continue
        key, val = parts
        # A timestamp may follow the value.
        m = re.match(r"^(\S+(?:\{.*\})?)\s+(\S+)(?:\s+\d+)?$", line)
        if m:
            key, val = m.group(1), m.group(2)
        try:
            out[key] = float(val)
        except ValueError:
            pass
    return out


def metric(m, name):
    """Sum of every series of `name` in parsed metrics (labels or none); 0 if absent."""
    return sum(v for k, v in m.items() if k == name or k.startswith(name + "{"))


def check_error(err_obj, code, what):
    """`err_obj` is the {"code","status","message","retryable"} object."""
    check(isinstance(err_obj, dict), what + ": error is an object", err_obj)
    if isinstance(code, (tuple, list, set)):
        check(err_obj.get("code") in code, what + ": error code in %r" % (code,), err_obj)
    else:
        check_eq(err_obj.get("code"), code, what + ": error code")
    check_eq(err_obj.get("status"), err_obj.get("code", 0) // 100, what + ": status = code / 100")
    check(isinstance(err_obj.get("message"), str) and err_obj["message"].strip() != "",
          what + ": error has a message", err_obj)
    check(isinstance(err_obj.get("retryable"), bool), what + ": retryable is a bool", err_obj)
    if err_obj["code"] == 50300:
        check(err_obj["retryable"] is True, what + ": 50300 is retryable", err_obj)


def check_rest_error(status, body, code, what):
    want_status = (code[0] if isinstance(code, (tuple, list)) else code) // 100
    if isinstance(code, (tuple, list)):
        check(status in [c // 100 for c in code], what + ": HTTP status", status, body)
    else:
        check_eq(status, want_status, what + ": HTTP status (body %r)" % (body,))
    check(isinstance(body, dict) and set(body.keys()) == {"error"},
          what + ": body is {\"error\": {...}}", body)
    check_error(body["error"], code, what)
    check_eq(body["error"]["status"], status, what + ": error.status = HTTP status")


def check_message_obj(m, channel, what):
    """A message object as the contract defines it (WebSocket frame or REST)."""
    check(isinstance(m, dict), what + ": message is an object", m)
    check_eq(m.get("channel"), channel, what + ": channel")
    check(isinstance(m.get("seq"), int) and m["seq"] >= 1, what + ": seq is a positive int", m)
    check(isinstance(m.get("id"), str) and m["id"] != "", what + ": id is a non-empty string", m)
    check("data" in m, what + ": has data", m)
    check(isinstance(m.get("ts"), int), what + ": ts is an integer (ms)", m)
    now_ms = int(time.time() * 1000)
    check(abs(m["ts"] - now_ms) < 24 * 3600 * 1000, what + ": ts is epoch ms near now", m["ts"], now_ms)
    if "name" in m:
        check(isinstance(m["name"], str), what + ": name is a string", m)


# --------------------------------------------------------------------------- WebSocket (websockets lib)

class Client:
    """A WebSocket client speaking tern.v1.json, with ref correlation.

    Frames that are not the awaited reply are kept in `self.backlog` in arrival
    order; heartbeats are counted and dropped unless keep_heartbeats is set.
    """

    def __init__(self, ws, keep_heartbeats=False):
        self.ws = ws
        self.backlog = []
        self.next_ref = 1
        self.heartbeats = 0
        self.keep_heartbeats = keep_heartbeats
        self.connected = None

    @classmethod
    async def connect(cls, server_or_url, subprotocols=(SUBPROTOCOL,), max_size=2 ** 22,
                      keep_heartbeats=False, **kw):
        url = server_or_url if isinstance(server_or_url, str) else server_or_url.ws_url
        ws = await asyncio.wait_for(websockets.connect(
            url, subprotocols=list(subprotocols) if subprotocols else None,
            max_size=max_size, open_timeout=WAIT_S, close_timeout=WAIT_S, ping_interval=None,
            compression=None, **kw), WAIT_S)
        c = cls(ws, keep_heartbeats)
        first = await c.raw_frame()
        check_eq(first.get("op"), "connected", "first frame op (frame %r)" % (first,))
        c.connected = first
        return c

    async def raw_frame(self, timeout=WAIT_S):
        text = await asyncio.wait_for(self.ws.recv(), timeout)
        check(isinstance(text, str), "server sent a text frame", text[:100] if text else text)
        f = json.loads(text)
        check(isinstance(f, dict) and "op" in f, "server frame is an object with op", f)
        return f

    async def frame(self, timeout=WAIT_S):
        """Next frame not yet consumed (backlog first)."""
        if self.backlog:
            return self.backlog.pop(0)
        return await self._read(timeout)

    async def _read(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise asyncio.TimeoutError()
            f = await self.raw_frame(left)
            if f.get("op") == "heartbeat" and not self.keep_heartbeats:
                self.heartbeats += 1
                continue
            return f

    async def expect(self, pred, timeout=WAIT_S, what="frame"):
        """First frame (backlog, then socket) matching pred; others stay in backlog."""
        for i, f in enumerate(self.backlog):
            if pred(f):
                return self.backlog.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TestFailure("timed out after %ss waiting for %s; backlog %r"
                                  % (timeout, what, self.backlog[-5:]))
            try:
                f = await self._read(left)
            except asyncio.TimeoutError:
                continue
            if pred(f):
                return f
            self.backlog.append(f)

    async def send(self, obj):
        # Non-ASCII goes out as UTF-8, as browsers' JSON.stringify sends it: the
        # JSON text as sent is then the same as the server's own serialization.
        await self.ws.send(obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False))

    async def call(self, op, timeout=WAIT_S, **fields):
        """Sends {op, ref, **fields}; returns the reply with that ref (ok, pong or error)."""
        ref = self.next_ref
        self.next_ref += 1
        frame = {"op": op, "ref": ref}
        frame.update(fields)
        await self.send(frame)
        return await self.expect(lambda f: f.get("ref") == ref and f.get("op") in ("ok", "pong", "error"),
                                 timeout, "reply to %s ref %d" % (op, ref))

    async def ok(self, op, timeout=WAIT_S, **fields):
        r = await self.call(op, timeout, **fields)
        check_eq(r.get("op"), "ok", "%s reply op (reply %r)" % (op, r))
        return r

    async def error(self, op, code, what, timeout=WAIT_S, **fields):
        r = await self.call(op, timeout, **fields)
        check_eq(r.get("op"), "error", what + ": reply op (reply %r)" % (r,))
        check_error(r.get("error"), code, what)
        return r

    async def subscribe(self, channel, **opts):
        return await self.ok("subscribe", channel=channel, **opts)

    async def publish(self, channel, data, **opts):
        r = await self.ok("publish", channel=channel, data=data, **opts)
        check(isinstance(r.get("seq"), int) and r["seq"] >= 1, "publish ok has seq", r)
        check(isinstance(r.get("id"), str) and r["id"], "publish ok has id", r)
        return r

    async def ping(self, timeout=WAIT_S):
        r = await self.call("ping", timeout)
        check_eq(r.get("op"), "pong", "ping reply op (reply %r)" % (r,))
        return r

    async def message(self, channel=None, timeout=WAIT_S):
        return await self.expect(lambda f: f.get("op") == "message" and (channel is None or f.get("channel") == channel),
                                 timeout, "message on %r" % (channel,))

    async def messages(self, channel, n, timeout=WAIT_S):
        out = []
        deadline = time.monotonic() + timeout
        for _ in range(n):
            out.append(await self.message(channel, max(0.1, deadline - time.monotonic())))
        return out

    async def sync(self):
        """Round trip: everything the server queued before the pong is now in backlog."""
        await self.ping()

    async def alive(self, what):
        """The connection is open and answers."""
        try:
            await self.ping()
        except websockets.ConnectionClosed as e:
            raise TestFailure("%s: connection closed (%s)" % (what, e))

    async def expect_close(self, timeout=WAIT_S):
        """Reads until the server closes; returns (frames before close, close code, reason)."""
        frames = list(self.backlog)
        self.backlog = []
        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TestFailure("connection not closed within %ss" % timeout)
                text = await asyncio.wait_for(self.ws.recv(), left)
                frames.append(json.loads(text) if isinstance(text, str) else text)
        except websockets.ConnectionClosed as e:
            rcvd = e.rcvd
            return frames, (rcvd.code if rcvd else None), (rcvd.reason if rcvd else None)
        except asyncio.TimeoutError:
            raise TestFailure("connection not closed within %ss; frames %r" % (timeout, frames[-3:]))

    async def close(self):
        try:
            await asyncio.wait_for(self.ws.close(), WAIT_S)
        except Exception:
            pass


# --------------------------------------------------------------------------- raw socket WebSocket

class RawWS:
    """A minimal RFC 6455 client over a plain socket, for what a library hides:
    a reader that stops reading (small SO_RCVBUF), exact frames, close codes."""

    def __init__(self, port, path="/v1/ws", rcvbuf=None, protocol=SUBPROTOCOL, timeout=WAIT_S):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((HOST, port))
        self.buf = b""
        key = base64.b64encode(os.urandom(16)).decode()
        req = ("GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" % (path, HOST, port, key))
        if protocol:
            req += "Sec-WebSocket-Protocol: %s\r\n" % protocol
        self.sock.sendall((req + "\r\n").encode())
        while b"\r\n\r\n" not in self.buf:
            check(len(self.buf) < 65536, "raw ws: handshake response under 64 KiB")
            chunk = self.sock.recv(4096)
            check(chunk, "raw ws: server closed during handshake", self.buf)
            self.buf += chunk
        head, _, self.buf = self.buf.partition(b"\r\n\r\n")
        self.response_head = head.decode("latin-1")
        check(self.response_head.startswith("HTTP/1.1 101"), "raw ws: 101 Switching Protocols", self.response_head)

    def send_frame(self, opcode, payload, fin=True):
        header = bytes([(0x80 if fin else 0) | opcode])
        n = len(payload)
        if n < 126:
            header += bytes([0x80 | n])
        elif n < 65536:
            header += bytes([0x80 | 126]) + struct.pack("!H", n)
        else:
            header += bytes([0x80 | 127]) + struct.pack("!Q", n)
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload)) if n < 4096 else _mask_fast(payload, mask)
        self.sock.sendall(header + mask + masked)

    def send_json(self, obj):
        self.send_frame(0x1, json.dumps(obj, ensure_ascii=False).encode())

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("raw ws: connection closed by peer")
            self.buf += chunk

    def recv_frame(self):
        """(fin, opcode, payload)."""
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        n = b1 & 0x7F
        off = 2
        if n == 126:
            self._need(4)
            n = struct.unpack("!H", self.buf[2:4])[0]
            off = 4
        elif n == 127:
            self._need(10)
            n = struct.unpack("!Q", self.buf[2:10])[0]
            off = 10
        check(not (b1 & 0x80), "raw ws: server frames are not masked")
        self._need(off + n)
        payload = self.buf[off:off + n]
        self.buf = self.buf[off + n:]
        return bool(b0 & 0x80), b0 & 0x0F, payload

    def recv_message(self):
        """('text'|'binary'|'close'|'ping'|'pong', payload); joins fragments."""
        parts = []
        first = None
        for _ in range(1000000):
            fin, op, payload = self.recv_frame()
            if op >= 0x8:
                if op == 0x8:
                    return "close", payload
                if op == 0x9:
                    self.send_frame(0xA, payload)
                    continue
                return "pong", payload
            if first is None:
                first = op
            parts.append(payload)
            if fin:
                data = b"".join(parts)
                return ("text" if first == 0x1 else "binary"), data
        raise TestFailure("raw ws: no complete message in a million frames")

    def answer_close(self, payload, max_frames=10):
        """Answers a received close frame with one echoing its code (RFC 6455
        5.5.1) and returns whatever the server sends after that; a clean
        close handshake gives [] (the server only ends the TCP connection)."""
        self.send_frame(0x8, payload[:2])
        after = []
        try:
            for _ in range(max_frames):
                after.append(self.recv_frame())
        except EOFError:
            pass
        except OSError as e:
            after.append(("socket error", repr(e)))
        return after

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def _mask_fast(payload, mask):
    n = len(payload)
    m = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ m).to_bytes(n, "big")


def close_code(payload):
    if len(payload) < 2:
        return None
    return struct.unpack("!H", payload[:2])[0]


# --------------------------------------------------------------------------- runner

def run(coro_or_fn, *args):
    if inspect.iscoroutinefunction(coro_or_fn):
        return asyncio.run(coro_or_fn(*args))
    return coro_or_fn(*args)


def _mode():
    return os.environ.get("TERN_IT_MODE", "dev") or "dev"


# Tests that check what only `tern dev` (broker and edge in one process) has;
# skipped when a suite runs in split mode (TERN_IT_MODE=split), with the reason.
SPLIT_SKIP = {
    "test_queue_redelivery.py": {
        "test_queue_metrics_series": "the per-queue metrics (tern_queue_*) are on the node's /metrics",
        "test_metrics_label_values_escaped": "the per-queue metrics (tern_queue_*) are on the node's /metrics",
    },
}


def main(module_globals):
    """Runs every test_* function of the calling script, in file order.

    Usage: python3 test_x.py /path/to/tern [name-filter]
    Prints one line per test and ends with 'N passed, N failed'.
    """
    global TERN
    if len(sys.argv) < 2:
        print("usage: %s /path/to/tern [filter]" % sys.argv[0], file=sys.stderr)
        sys.exit(2)
    TERN = os.path.abspath(sys.argv[1])
    flt = sys.argv[2] if len(sys.argv) > 2 else None
    if not os.access(TERN, os.X_OK):
        print("not executable: %s" % TERN, file=sys.stderr)
        sys.exit(2)
    tests = [(n, f) for n, f in module_globals.items()
             if n.startswith("test_") and callable(f) and (flt is None or flt in n)]
    tests.sort(key=lambda t: t[1].__code__.co_firstlineno)
    passed = failed = 0
    skips = SPLIT_SKIP.get(os.path.basename(sys.argv[0]), {}) if _mode() == "split" else {}
    for name, fn in tests:
        if name in skips:
            print("skip %s (split mode: %s)" % (name, skips[name]), flush=True)
            continue
        t0 = time.monotonic()
        try:
            run(fn)
        except Exception as e:  # report and go on: one test's failure is one line
            failed += 1
            print("FAIL %s (%.1fs): %s" % (name, time.monotonic() - t0, e), flush=True)
            traceback.print_exc()
        else:
            passed += 1
            print("ok   %s (%.1fs)" % (name, time.monotonic() - t0), flush=True)
    print("%d passed, %d failed" % (passed, failed))
    sys.exit(1 if failed or not tests else 0)
