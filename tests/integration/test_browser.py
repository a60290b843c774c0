"""Headless Chromium (Debian's chromium) loads the demo page served at `/`,
subscribes and publishes through its UI with the repo's tern.js, and sees
messages arrive from itself and from other clients; errors surface as
TernError codes; after the server goes away and comes back, tern.js
re-subscribes with from_seq and shows what was published meanwhile, once.

Driven over the DevTools protocol with python3-websockets (no extra package)."""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

import websockets

import ternlib as T
from ternlib import Client, check, check_eq

CHROMIUM = os.environ.get("TERN_IT_CHROMIUM", "/usr/bin/chromium")


class Browser:
    def __init__(self):
        self.tmp = tempfile.mkdtemp(prefix="tern-it-chromium-")
        self.proc = None
        self.ws = None
        self.next_id = 1
        self.events = []
        self.pending = {}
        self.reader = None

    async def start(self):
        profile = os.path.join(self.tmp, "profile")
        os.makedirs(profile)
        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-extensions", "--disable-default-apps", "--mute-audio",
             "--user-data-dir=" + profile, "--remote-debugging-address=127.0.0.1",
             "--remote-debugging-port=0", "--window-size=1200,900", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.tmp, "chromium.log"), "wb"),
            stdin=subprocess.DEVNULL)
        port_file = os.path.join(profile, "DevToolsActivePort")
        deadline = time.monotonic() + 60
        port = None
        while time.monotonic() < deadline:
            check(self.proc.poll() is None, "chromium exited early", self.log()[-2000:])
            if os.path.exists(port_file):
                with open(port_file) as f:
                    first = f.readline().strip()
                if first.isdigit():
                    port = int(first)
                    break
            await asyncio.sleep(0.1)
        check(port, "chromium announced its DevTools port", self.log()[-2000:])
        targets = []
        while time.monotonic() < deadline and not targets:
            with urllib.request.urlopen("http://127.0.0.1:%d/json/list" % port, timeout=10) as r:
                targets = [t for t in json.load(r) if t.get("type") == "page"]
            if not targets:
                await asyncio.sleep(0.1)
        check(targets, "chromium has a page target")
        self.ws = await websockets.connect(targets[0]["webSocketDebuggerUrl"], max_size=2 ** 26,
                                           ping_interval=None, open_timeout=30)
        self.reader = asyncio.ensure_future(self._read())
        await self.cmd("Runtime.enable")
        await self.cmd("Page.enable")
        await self.cmd("Log.enable")

    def log(self):
        try:
            with open(os.path.join(self.tmp, "chromium.log"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    async def _read(self):
        try:
            async for text in self.ws:
                msg = json.loads(text)
                if "id" in msg and msg["id"] in self.pending:
                    self.pending.pop(msg["id"]).set_result(msg)
                elif "method" in msg:
                    self.events.append(msg)
        except websockets.ConnectionClosed:
            pass

    async def cmd(self, method, timeout=30, **params):
        i = self.next_id
        self.next_id += 1
        fut = asyncio.get_running_loop().create_future()
        self.pending[i] = fut
        await self.ws.send(json.dumps({"id": i, "method": method, "params": params}))
        msg = await asyncio.wait_for(fut, timeout)
        if "error" in msg:
            raise T.TestFailure("DevTools %s failed: %r" % (method, msg["error"]))
        return msg.get("result", {})

    async def js(self, expr, timeout=30):
        """Evaluates `expr` in the page (awaiting a promise); returns its JSON value."""
        r = await self.cmd("Runtime.evaluate", timeout=timeout, expression=expr, awaitPromise=True,
                           returnByValue=True)
        if "exceptionDetails" in r:
            raise T.TestFailure("page script failed: %s: %r" % (expr[:200], r["exceptionDetails"].get("exception", r["exceptionDetails"])))
        return r.get("result", {}).get("value")

    async def wait_js(self, expr, what, timeout=30):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            last = await self.js(expr)
            if last:
                return last
            await asyncio.sleep(0.1)
        raise T.TestFailure("timed out after %ss waiting for %s (last %r)" % (timeout, what, last))

    def page_errors(self):
        out = []
        for e in self.events:
            if e["method"] == "Runtime.exceptionThrown":
                out.append(e["params"]["exceptionDetails"])
            elif e["method"] == "Runtime.consoleAPICalled" and e["params"].get("type") == "error":
                out.append(e["params"])
        return out

    async def close(self):
        try:
            if self.ws is not None:
                try:
                    await asyncio.wait_for(self.cmd("Browser.close"), 10)
                except Exception:
                    pass
                await self.ws.close()
        finally:
            if self.reader:
                self.reader.cancel()
            if self.proc is not None:
                try:
                    self.proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    self.proc.send_signal(signal.SIGTERM)
                    try:
                        self.proc.wait(timeout=15)
                    except subprocess.TimeoutExpired:
                        self.proc.kill()
                        self.proc.wait()
            shutil.rmtree(self.tmp, ignore_errors=True)


def log_entries_expr(ch):
    return ("Array.from(document.querySelectorAll('#log li.message')).filter(li => li.dataset.channel === %s)"
            ".map(li => ({seq: Number(li.dataset.seq), id: li.dataset.id, name: li.dataset.name || null,"
            " data: JSON.parse(li.dataset.data)}))" % json.dumps(ch))


def test_static_assets_served():
    with T.Server() as s:
        status, headers, body = s.http("GET", "/")
        check_eq(status, 200, "GET /")
        ct = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
        check("text/html" in ct, "index.html is served as text/html", ct)
        check("/tern.js" in body and "<title>" in body, "the demo page is served at /")
        # The machine may have no internet: the page must not load anything from elsewhere.
        for bad in ('src="http', "src='http", 'href="http', "href='http", "@import", 'src="//', 'href="//'):
            check(bad not in body, "no external asset in the demo page (%s)" % bad)
        status, headers, body = s.http("GET", "/tern.js")
        check_eq(status, 200, "GET /tern.js")
        ct = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
        check("javascript" in ct, "tern.js is served as JavaScript", ct)
        here = os.path.dirname(os.path.abspath(__file__))
        with open(os.path.join(here, "..", "..", "edge", "static", "tern.js"), encoding="utf-8") as f:
            check_eq(body, f.read(), "the served tern.js is the repo's file")


async def test_demo_page_subscribe_publish_reconnect():
    s = T.Server().start()
    b = Browser()
    try:
        await b.start()
        ch = "browser:%d" % time.time_ns()
        await b.cmd("Page.navigate", url=s.base + "/")
        await b.wait_js("document.readyState === 'complete' && !!window.tern", "the page and tern.js to load")
        await b.wait_js("document.getElementById('status').dataset.state === 'open'", "status 'open' on the page")
        check_eq(await b.js("document.getElementById('status').textContent"), "connected", "status text")

        # Subscribe through the form.
        await b.js("document.getElementById('channel').value = %s; document.getElementById('channel')"
                   ".dispatchEvent(new Event('input')); document.getElementById('subscribe').click(); true" % json.dumps(ch))
        await b.wait_js("!!document.querySelector('#subs li[data-subscribed=\"true\"]')", "the subscription to show")
        check_eq(s.channel_info(ch)["subscribers"], 1, "the page is a subscriber")

        # A Python subscriber sees what the page publishes; the page sees it too.
        py = await Client.connect(s)
        await py.subscribe(ch)
        await b.js("document.getElementById('pub-data').value = '{\"hello\": \"from the browser\"}';"
                   "document.getElementById('pub-name').value = 'greeting';"
                   "document.getElementById('publish').click(); true")
        entries = await b.wait_js(log_entries_expr(ch) + ".length >= 1 && " + log_entries_expr(ch), "the page's own message")
        check_eq(entries[0]["data"], {"hello": "from the browser"}, "page log data")
        check_eq(entries[0]["name"], "greeting", "page log name")
        check_eq(entries[0]["seq"], 1, "page log seq")
        fb = await b.wait_js("document.getElementById('feedback').dataset.seq", "publish feedback")
        check_eq(fb, "1", "feedback names the seq")
        m = await py.message(ch)
        check_eq((m["seq"], m["data"], m.get("name")), (1, {"hello": "from the browser"}, "greeting"), "python sees the page's message")

        # Another client publishes: the page shows it.
        out = s.publish_rest(ch, {"data": {"from": "rest"}})
        r = await py.publish(ch, "from python")
        entries = await b.wait_js("(%s).length >= 3 && %s" % (log_entries_expr(ch), log_entries_expr(ch)), "messages from others")
        check_eq([(e["seq"], e["data"]) for e in entries], [(1, {"hello": "from the browser"}), (2, {"from": "rest"}),
                                                           (3, "from python")], "page log in seq order")

        # tern.js API: promise replies and TernError codes.
        res = await b.js("tern.publish(%s, {api: true}).then(ok => ({op: ok.op, seq: ok.seq, id: typeof ok.id}))" % json.dumps(ch))
        check_eq(res, {"op": "ok", "seq": 4, "id": "string"}, "tern.publish resolves with ok, seq and id")
        err = await b.js("tern.publish('$reserved', 1).then(() => null, e => ({name: e.name, code: e.code, retryable: e.retryable}))")
        check_eq(err, {"name": "TernError", "code": 40001, "retryable": False}, "a bad name rejects with TernError 40001")
        pong = await b.js("tern.ping().then(p => p.op)")
        check_eq(pong, "pong", "tern.ping")
        big = await b.js("tern.publish(%s, 'x'.repeat(70000)).then(() => null, e => e.code)" % json.dumps(ch))
        check_eq(big, 41300, "oversize publish rejects with 41300")
        check_eq(await b.js("tern.state"), "open", "still connected after errors")
        await b.wait_js("(%s).length >= 4" % log_entries_expr(ch), "the API-published message")

        # The server goes away; meanwhile another server on the same data dir takes 3 messages;
        # when the page's server is back, tern.js re-subscribes with from_seq and shows exactly those.
        await py.close()
        port = s.port
        await b.js("window.closeCodes = []; tern.on('close', ev => closeCodes.push(ev.code)); true")
        s.stop()
        codes = await b.wait_js("closeCodes.length >= 1 && closeCodes", "the close event")
        close_1001 = codes[0] == 1001  # checked at the end, so the rest still runs
        await b.wait_js("document.getElementById('status').dataset.state === 'reconnecting'", "status 'reconnecting'")
        other = T.Server(data_dir=s.data_dir)
        other.start()
        try:
            missed = other.publish_rest(ch, [{"data": "missed %d" % i} for i in range(3)])
            check_eq([x["seq"] for x in missed], [5, 6, 7], "seqs published while the page was away")
            other.stop()
        finally:
            other.cleanup()
        s.start(port=port)
        await b.wait_js("document.getElementById('status').dataset.state === 'open'", "reconnected", timeout=60)
        entries = await b.wait_js("(%s).length >= 7 && %s" % (log_entries_expr(ch), log_entries_expr(ch)),
                                  "the messages published while away", timeout=30)
        check_eq([e["seq"] for e in entries], [1, 2, 3, 4, 5, 6, 7], "every seq once, in order, after the reconnect")
        check_eq([e["data"] for e in entries[4:]], ["missed 0", "missed 1", "missed 2"], "missed messages' data")
        # And live delivery resumes.
        s.publish_rest(ch, {"data": "after"})
        entries = await b.wait_js("(%s).length >= 8 && %s" % (log_entries_expr(ch), log_entries_expr(ch)), "live after reconnect")
        check_eq(entries[-1]["data"], "after", "live message after the reconnect")
        check_eq(s.channel_info(ch)["subscribers"], 1, "one subscription after the reconnect")

        # Unsubscribe through the UI: the subscription goes away on the server.
        await b.js("document.querySelector('#subs li button').click(); true")
        deadline = time.monotonic() + 20
        while s.channel_info(ch)["subscribers"] != 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        check_eq(s.channel_info(ch)["subscribers"], 0, "unsubscribed from the page")

        # Rewind through the form: the last 2 of a channel's history, then live.
        ch2 = ch + ":rewind"
        s.publish_rest(ch2, [{"data": "h%d" % i} for i in range(5)])
        await b.js("document.getElementById('channel').value = %s; document.getElementById('rewind').value = '2';"
                   "document.getElementById('subscribe').click(); true" % json.dumps(ch2))
        entries = await b.wait_js("(%s).length >= 2 && %s" % (log_entries_expr(ch2), log_entries_expr(ch2)), "rewound history")
        s.publish_rest(ch2, {"data": "live"})
        entries = await b.wait_js("(%s).length >= 3 && %s" % (log_entries_expr(ch2), log_entries_expr(ch2)), "live after rewind")
        check_eq([(e["seq"], e["data"]) for e in entries], [(4, "h3"), (5, "h4"), (6, "live")], "rewind 2 then live")

        shot = await b.cmd("Page.captureScreenshot", format="png")
        out_png = os.environ.get("TERN_IT_SCREENSHOT")
        if out_png:
            import base64
            with open(out_png, "wb") as f:
                f.write(base64.b64decode(shot["data"]))
        errors = b.page_errors()
        check(not errors, "no script errors on the page", errors[:3])
        check(close_1001, "the browser saw close code 1001 when the server shut down (got %r)" % (codes,))
        s.stop()
    finally:
        await b.close()
        s.cleanup()


async def test_js_client_queues():
    """tern.js in the browser: enqueue, consume with ack(), nack() giving work
    back with attempt + 1, cancel; what the page acked is gone from the queue."""
    s = T.Server().start()
    b = Browser()
    try:
        await b.start()
        q = "browser-q-%d" % time.time_ns()
        await b.cmd("Page.navigate", url=s.base + "/")
        await b.wait_js("!!window.tern && window.tern.state === 'open'", "tern.js connected")
        ids = await b.js("Promise.all([1, 2, 3].map(n => tern.enqueue(%s, {n: n}))).then(r => r.map(x => x.id))"
                         % json.dumps(q))
        check_eq(len(ids), 3, "three enqueue oks with ids")
        await b.js("window.got = []; tern.consume(%s, {prefetch: 5}, d => { window.got.push(d); })"
                   ".then(() => true)" % json.dumps(q))
        got = await b.wait_js("window.got.length >= 3 && window.got.map(d => [d.data.n, d.attempt])",
                              "three deliveries in the page")
        check_eq(got, [[1, 1], [2, 1], [3, 1]], "FIFO, first attempt")
        # nack the first: it comes back first, attempt 2; ack the rest.
        await b.js("window.got[0].nack().then(() => Promise.all([window.got[1].ack(), window.got[2].ack()]))"
                   ".then(() => true)")
        again = await b.wait_js("window.got.length >= 4 && [window.got[3].data.n, window.got[3].attempt]",
                                "the nacked delivery again")
        check_eq(again, [1, 2], "given back with attempt + 1")
        await b.js("window.got[3].ack().then(() => tern.cancel(%s)).then(() => true)" % json.dumps(q))
        status, _, info = s.http("GET", "/v1/queues/%s" % q)
        check_eq((status, info["ready"], info["unacked"], info["consumers"]), (200, 0, 0, 0),
                 "everything acked, the consumer cancelled")
        err = await b.js("tern.ack(%s, 'no-such-delivery').then(() => null, e => e.code)" % json.dumps(q))
        check_eq(err, 40400, "acking an unknown delivery rejects with 40400")
        errors = b.page_errors()
        check(not errors, "no script errors on the page", errors[:3])
        s.stop()
    finally:
        await b.close()
        s.cleanup()


if __name__ == "__main__":
    T.main(globals())
