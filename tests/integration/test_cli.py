"""The command line: `tern --version`, `tern help`, `tern pub`, `tern sub`
(`--url`), the start line of `tern dev`, config files and flags over them, and
the failure rule: bad flags, a busy port or an unusable data dir exit non-zero
with exactly one clear line on stderr. SIGTERM/SIGINT end `tern sub` with 0."""

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time

import ternlib as T
from ternlib import Client, check, check_eq

HERE = os.path.dirname(os.path.abspath(__file__))


def project_version():
    with open(os.path.join(HERE, "..", "..", "CMakeLists.txt")) as f:
        m = re.search(r"project\(\s*tern\s+VERSION\s+([0-9.]+)", f.read())
    return m.group(1) if m else None


def tern(*args, timeout=60, **kw):
    return subprocess.run([T.TERN] + list(args), capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, **kw)


def check_one_line_failure(p, what):
    err = p.stderr.decode("utf-8", "replace")
    check(p.returncode != 0, "%s: exits non-zero (got %d)" % (what, p.returncode), err)
    lines = T.one_line(err)
    check_eq(len(lines), 1, "%s: exactly one line on stderr (stderr %r)" % (what, err[:600]))
    check(len(lines[0]) < 300, "%s: the line is short" % what, lines[0])
    return lines[0]


def test_version():
    p = tern("--version")
    check_eq(p.returncode, 0, "tern --version exit code (stderr %r)" % p.stderr[:300])
    out = p.stdout.decode()
    v = project_version()
    check(v and v in out, "--version prints the project version %r" % v, out)
    check_eq(len(T.one_line(out)), 1, "--version prints one line")


def test_help():
    p = tern("help")
    check_eq(p.returncode, 0, "tern help exit code (stderr %r)" % p.stderr[:300])
    out = p.stdout.decode() + p.stderr.decode()
    for word in ("dev", "pub", "sub", "--url", "--listen", "--data", "--config"):
        check(word in out, "help mentions %s" % word, out[:1500])


def test_bad_flags_one_line():
    tmp = T.tmpdir("tern-it-cli-")
    port = T.free_port()
    listen = "127.0.0.1:%d" % port
    data = os.path.join(tmp, "d")
    cases = [
        ("unknown global flag", ["--bogus"]),
        ("unknown command", ["frobnicate"]),
        ("dev unknown flag", ["dev", "--listen", listen, "--data", data, "--bogus"]),
        ("dev --listen without value", ["dev", "--data", data, "--listen"]),
        ("dev --listen not an address", ["dev", "--listen", "nonsense", "--data", data]),
        ("dev --listen port out of range", ["dev", "--listen", "127.0.0.1:99999", "--data", data]),
        ("dev --listen port not a number", ["dev", "--listen", "127.0.0.1:http", "--data", data]),
        ("dev --config missing file", ["dev", "--listen", listen, "--data", data, "--config", os.path.join(tmp, "nope.conf")]),
        ("pub without arguments", ["pub"]),
        ("pub without data", ["pub", "chan"]),
        ("pub with a bad --url", ["pub", "--url", "not a url", "chan", "1"]),
        ("sub without channel", ["sub"]),
        ("sub unknown flag", ["sub", "--bogus", "chan"]),
    ]
    for what, args in cases:
        p = tern(*args, timeout=60)
        check_one_line_failure(p, what)
    check(not os.path.exists(os.path.join(tmp, "d", "nonexistent")), "sanity")


def test_bad_config_values_one_line():
    tmp = T.tmpdir("tern-it-cfg-")
    port = T.free_port()
    for what, text in [("unknown key", "no_such_key 5\n"),
                       ("not a number", "max_message_bytes lots\n"),
                       ("negative", "heartbeat_ms -5\n"),
                       ("bad store_sync", "store_sync sometimes\n"),
                       ("flush_linger_ms above 1000", "flush_linger_ms 1001\n"),
                       ("key without value", "heartbeat_ms\n")]:
        path = os.path.join(tmp, "c.conf")
        with open(path, "w") as f:
            f.write("# a comment\n" + text)
        try:
            p = tern("dev", "--listen", "127.0.0.1:%d" % port, "--data", os.path.join(tmp, "d"), "--config", path, timeout=20)
        except subprocess.TimeoutExpired:
            raise T.TestFailure("tern dev started with a config with %s: %r" % (what, text))
        check_one_line_failure(p, "config with %s" % what)


def test_busy_port_one_line():
    holder = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    holder.bind((T.HOST, 0))
    holder.listen(1)
    port = holder.getsockname()[1]
    tmp = T.tmpdir("tern-it-busy-")
    try:
        p = tern("dev", "--listen", "127.0.0.1:%d" % port, "--data", os.path.join(tmp, "d"), timeout=60)
        line = check_one_line_failure(p, "busy port")
        check(str(port) in line or "use" in line.lower() or "bind" in line.lower() or "listen" in line.lower(),
              "the line says what failed", line)
    finally:
        holder.close()


def test_listen_on_a_host_name():
    """--listen takes a name as users type it (localhost:PORT); a name that does
    not resolve fails with one line."""
    port = T.free_port()
    s = T.Server(extra_args=["--listen", "localhost:%d" % port], port=port).start()
    try:
        status, _, body = s.http("GET", "/healthz")
        check_eq((status, body), (200, {"status": "ok"}), "healthz on localhost:PORT")
        s.stop()
    finally:
        s.cleanup()
    tmp = T.tmpdir("tern-it-name-")
    p = tern("dev", "--listen", "no-such-host.invalid:%d" % T.free_port(), "--data",
             os.path.join(tmp, "d"), timeout=60)
    line = check_one_line_failure(p, "unresolvable listen host")
    check("no-such-host.invalid" in line, "the line names the host", line)


def test_unusable_data_dir_one_line():
    tmp = T.tmpdir("tern-it-data-")
    a_file = os.path.join(tmp, "file")
    with open(a_file, "w") as f:
        f.write("not a dir")
    for what, data in (("data dir is a file", a_file), ("data dir under a file", os.path.join(a_file, "sub"))):
        p = tern("dev", "--listen", "127.0.0.1:%d" % T.free_port(), "--data", data, timeout=60)
        check_one_line_failure(p, what)
    # A data dir holding a corrupt database file.
    d = os.path.join(tmp, "corrupt")
    os.makedirs(d)
    s = T.Server(data_dir=d)
    s.start()
    s.publish_rest("corrupt-me", [{"data": "x" * 1000} for _ in range(20)])
    s.stop()
    for name in os.listdir(d):
        path = os.path.join(d, name)
        if os.path.isfile(path) and os.path.getsize(path) > 0 and not name.endswith(("-wal", "-shm")):
            with open(path, "r+b") as f:
                f.write(b"this is not a database" * 100)
    try:
        p = tern("dev", "--listen", "127.0.0.1:%d" % T.free_port(), "--data", d, timeout=30)
    except subprocess.TimeoutExpired:
        raise T.TestFailure("tern dev kept running on a data dir whose store files are garbage")
    check_one_line_failure(p, "corrupt database in the data dir")
    s.cleanup()


def test_start_line_and_config_override():
    p1, p2 = T.free_port(), T.free_port()
    s = T.Server(config={"listen": "127.0.0.1:%d" % p1, "max_message_bytes": 1024, "heartbeat_ms": 5000})
    s.start(port=p2)  # the flag --listen 127.0.0.1:p2 overrides the file's listen
    try:
        err = s.stderr()
        lines = [l for l in T.one_line(err) if ("127.0.0.1:%d" % p2) in l]
        check_eq(len(lines), 1, "one start line naming the listening address (stderr %r)" % err[:1000])
        v = project_version()
        check(v in lines[0], "the start line carries the version %r" % v, lines[0])
        check(re.search(r"auth", err, re.I), "without keys it says auth is off on start", err[:1000])
        try:
            socket.create_connection((T.HOST, p1), timeout=1).close()
            listening_p1 = True
        except OSError:
            listening_p1 = False
        check(not listening_p1, "the file's listen address is overridden by --listen")

        async def go():
            c = await Client.connect(s)
            check_eq(c.connected.get("max_message_bytes"), 1024, "max_message_bytes from the config file")
            check_eq(c.connected.get("heartbeat_ms"), 5000, "heartbeat_ms from the config file")
            r = await c.call("publish", channel="cfg", data="a" * 1022)
            check_eq(r.get("op"), "ok", "1024 bytes accepted with max_message_bytes 1024")
            await c.error("publish", 41300, "1025 bytes with max_message_bytes 1024", channel="cfg", data="a" * 1023)
            await c.close()
        T.run(go)
        s.stop()
    finally:
        s.cleanup()


def test_sub_resumes_across_a_server_restart():
    """tern sub reconnects after the server goes away and resumes with from_seq:
    every message printed once, in order, none missed."""
    s = T.Server().start()
    ch = "cli-resume:%d" % time.time_ns()
    sub = subprocess.Popen([T.TERN, "sub", "--url", s.base, ch], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + T.WAIT_S
        while s.channel_info(ch)["subscribers"] < 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        s.publish_rest(ch, {"data": 1})
        first = read_line(sub.stdout, 30)
        check(first is not None and json.loads(first)["seq"] == 1, "seq 1 printed", first)
        s.stop()
        s.start()  # same port, same data dir
        for i in (2, 3):
            s.publish_rest(ch, {"data": i})
        got = [json.loads(read_line(sub.stdout, 30) or "null") for _ in range(2)]
        check_eq([(m or {}).get("seq") for m in got], [2, 3], "after the restart: 2 and 3, once each")
        check(sub.poll() is None, "tern sub kept running across the restart")
        sub.send_signal(signal.SIGINT)
        check_eq(sub.wait(timeout=30), 0, "tern sub exits 0 on SIGINT")
        s.stop()
    finally:
        if sub.poll() is None:
            sub.kill()
            sub.wait()
        s.cleanup()


def test_pub_and_sub():
    with T.Server() as s:
        ch = "cli:%d" % time.time_ns()
        sub = subprocess.Popen([T.TERN, "sub", "--url", s.base, ch], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + T.WAIT_S
            while s.channel_info(ch)["subscribers"] < 1 and time.monotonic() < deadline:
                check(sub.poll() is None, "tern sub is running", sub.stderr.read() if sub.poll() is not None else "")
                time.sleep(0.05)
            check_eq(s.channel_info(ch)["subscribers"], 1, "tern sub subscribed")
            p = tern("pub", "--url", s.base, ch, '{"a":1}')
            check_eq(p.returncode, 0, "tern pub exit code (stderr %r)" % p.stderr[:300])
            p = tern("pub", "--url", s.base, ch, "plain text")
            check_eq(p.returncode, 0, "tern pub with text exit code (stderr %r)" % p.stderr[:300])
            s.publish_rest(ch, {"name": "evt", "data": [1, 2]})
            hist = s.history(ch)
            check_eq(len(hist), 3, "two CLI publishes and one REST publish in history")
            check(hist[0]["data"] in ({"a": 1}, '{"a":1}'), "tern pub's JSON data", hist[0])
            check_eq(hist[1]["data"], "plain text", "tern pub's text data")
            lines = []
            for _ in range(3):
                line = read_line(sub.stdout, 30)
                check(line is not None, "tern sub printed a line per message (got %r)" % lines)
                lines.append(line)
            objs = []
            for line in lines:
                try:
                    objs.append(json.loads(line))
                except ValueError:
                    raise T.TestFailure("tern sub's line is not JSON: %r" % line)
            for o, h in zip(objs, hist):
                check(isinstance(o, dict), "one JSON object per line", o)
                check_eq((o.get("channel"), o.get("seq"), o.get("data")), (ch, h["seq"], h["data"]), "tern sub line")
            check_eq(objs[2].get("name"), "evt", "name printed")
            sub.send_signal(signal.SIGTERM)
            rc = sub.wait(timeout=30)
            check_eq(rc, 0, "tern sub exits 0 on SIGTERM (stderr %r)" % sub.stderr.read()[:300])
        finally:
            if sub.poll() is None:
                sub.kill()
                sub.wait()
        # SIGINT too.
        sub = subprocess.Popen([T.TERN, "sub", "--url", s.base, ch], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + T.WAIT_S
            while s.channel_info(ch)["subscribers"] < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            sub.send_signal(signal.SIGINT)
            rc = sub.wait(timeout=30)
            check_eq(rc, 0, "tern sub exits 0 on SIGINT")
        finally:
            if sub.poll() is None:
                sub.kill()
                sub.wait()


def test_pub_errors():
    with T.Server() as s:
        p = tern("pub", "--url", s.base, "$reserved", "1")
        line = check_one_line_failure(p, "tern pub on a reserved name")
        p = tern("pub", "--url", s.base, "x" * 256, "1")
        check_one_line_failure(p, "tern pub on a 256-byte name")
        p = tern("pub", "--url", s.base, "big", "a" * 70000)
        check_one_line_failure(p, "tern pub with data over the limit")
    port = T.free_port()
    p = tern("pub", "--url", "http://127.0.0.1:%d" % port, "ch", "1", timeout=60)
    check_one_line_failure(p, "tern pub with nothing listening")
    p = tern("sub", "--url", "http://127.0.0.1:%d" % port, "ch", timeout=60)
    check_one_line_failure(p, "tern sub with nothing listening")


def test_sub_default_url_is_8080():
    """Without --url both talk to http://127.0.0.1:8080; with nothing there
    they fail with one line (we do not own 8080, so only the failure is checked
    when it is free)."""
    try:
        socket.create_connection((T.HOST, 8080), timeout=1).close()
        return  # something listens on 8080 here; leave it alone
    except OSError:
        pass
    p = tern("pub", "ch", "1", timeout=60)
    line = check_one_line_failure(p, "tern pub with the default URL and nothing on 8080")


def read_line(stream, timeout):
    import select
    buf = b""
    deadline = time.monotonic() + timeout
    fd = stream.fileno()
    while time.monotonic() < deadline:
        r, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            break
        ch = os.read(fd, 1)
        if not ch:
            break
        if ch == b"\n":
            return buf.decode("utf-8", "replace")
        buf += ch
    return None


if __name__ == "__main__":
    T.main(globals())
