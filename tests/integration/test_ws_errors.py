"""Invalid input over WebSocket: every bad frame gets the contract's error shape
with the right code, carries the ref when it had one, keeps the connection
open and harms no other client; oversize messages get 41300 and the connection
stays open; a frame over twice the limit gets an error frame, then close 1009."""

import asyncio
import base64
import json
import time

import websockets

import ternlib as T
from ternlib import Client, check, check_eq

SHARED = T.Shared()
LIMIT = 65536


def server():
    return SHARED.get()


class Bystander:
    """A client on another connection that must keep receiving throughout."""

    def __init__(self, s):
        self.s = s
        self.ch = "bystander:%d" % time.time_ns()

    async def start(self):
        self.sub = await Client.connect(self.s)
        self.pub = await Client.connect(self.s)
        await self.sub.subscribe(self.ch)
        self.n = 0

    async def still_fine(self, what):
        r = await self.pub.publish(self.ch, self.n)
        m = await self.sub.message(self.ch)
        check_eq((m["seq"], m["data"]), (r["seq"], self.n), "another client unaffected (%s)" % what)
        self.n += 1

    async def close(self):
        await self.sub.close()
        await self.pub.close()


async def expect_error_frame(c, code, what, ref="absent"):
    f = await c.frame()
    check_eq(f.get("op"), "error", what + ": error frame (got %r)" % (f,))
    T.check_error(f.get("error"), code, what)
    if ref == "absent":
        check("ref" not in f, what + ": no ref on the error of a frame without a usable ref", f)
    elif ref is not None:
        check_eq(f.get("ref"), ref, what + ": error carries the frame's ref")
    await c.alive(what + ": connection stays open")
    return f


async def test_bad_json_and_non_objects():
    s = server()
    b = Bystander(s)
    await b.start()
    c = await Client.connect(s)
    for text in ["{", "not json", "{\"op\":\"ping\",}", "[1,2]", "42", "null", "\"ping\"", "{\"op\":\"ping\"",
                 "\x00\x01", "{\"op\":\"ping\"}{\"op\":\"ping\"}"]:
        await c.send(text)
        await expect_error_frame(c, 40000, "bad JSON %r" % text, ref=None)
        await b.still_fine("after %r" % text)
    await c.close()
    await b.close()


async def test_unknown_or_missing_op():
    s = server()
    b = Bystander(s)
    await b.start()
    c = await Client.connect(s)
    cases = [({"op": "frobnicate", "ref": 5}, 5),
             ({"op": "", "ref": 6}, 6),
             ({"op": "SUBSCRIBE", "ref": 7, "channel": "x"}, 7),
             ({"ref": 8, "channel": "x"}, 8),
             ({"op": 5, "ref": 9}, 9),
             ({"op": None, "ref": 10}, 10),
             ({"op": ["ping"], "ref": 11}, 11),
             ({"op": "frobnicate"}, "absent"),
             ({}, "absent")]
    for frame, ref in cases:
        await c.send(frame)
        await expect_error_frame(c, 40000, "frame %r" % (frame,), ref=ref)
    await b.still_fine("after unknown ops")
    await c.close()
    await b.close()


async def test_bad_ref_values():
    c = await Client.connect(server())
    for ref in (-1, "1", 1.5, None, [1], {"a": 1}, True):
        await c.send({"op": "ping", "ref": ref})
        f = await c.frame()
        check_eq(f.get("op"), "error", "ref %r is not a non-negative integer: error (got %r)" % (ref, f))
        T.check_error(f.get("error"), 40000, "bad ref %r" % (ref,))
        await c.alive("after bad ref %r" % (ref,))
    await c.close()


async def test_missing_and_mistyped_fields():
    s = server()
    b = Bystander(s)
    await b.start()
    c = await Client.connect(s)
    ch = "fields:%d" % time.time_ns()
    ref = 100
    cases = [
        ("subscribe without channel", {"op": "subscribe"}, 40000),
        ("publish without channel", {"op": "publish", "data": 1}, 40000),
        ("publish without data", {"op": "publish", "channel": ch}, 40000),
        ("unsubscribe without channel", {"op": "unsubscribe"}, 40000),
        ("subscribe channel number", {"op": "subscribe", "channel": 5}, (40000, 40001)),
        ("subscribe channel null", {"op": "subscribe", "channel": None}, (40000, 40001)),
        ("subscribe channel array", {"op": "subscribe", "channel": ["a"]}, (40000, 40001)),
        ("publish channel object", {"op": "publish", "channel": {"a": 1}, "data": 1}, (40000, 40001)),
        ("publish name number", {"op": "publish", "channel": ch, "name": 5, "data": 1}, 40000),
        ("publish name object", {"op": "publish", "channel": ch, "name": {}, "data": 1}, 40000),
        ("publish idempotency_key number", {"op": "publish", "channel": ch, "data": 1, "idempotency_key": 5}, 40000),
        ("publish unknown encoding", {"op": "publish", "channel": ch, "data": "aGk=", "encoding": "hex"}, 40000),
        ("publish base64 not a string", {"op": "publish", "channel": ch, "data": {"a": 1}, "encoding": "base64"}, 40000),
        ("publish bad base64", {"op": "publish", "channel": ch, "data": "!!!not base64!!!", "encoding": "base64"}, 40000),
        ("subscribe rewind and from_seq", {"op": "subscribe", "channel": ch, "rewind": 1, "from_seq": 0}, 40000),
        ("subscribe rewind negative", {"op": "subscribe", "channel": ch, "rewind": -1}, 40000),
        ("subscribe rewind string", {"op": "subscribe", "channel": ch, "rewind": "5"}, 40000),
        ("subscribe rewind float", {"op": "subscribe", "channel": ch, "rewind": 1.5}, 40000),
        ("subscribe from_seq negative", {"op": "subscribe", "channel": ch, "from_seq": -1}, 40000),
        ("subscribe from_seq string", {"op": "subscribe", "channel": ch, "from_seq": "3"}, 40000),
        ("subscribe from_seq null", {"op": "subscribe", "channel": ch, "from_seq": None}, 40000),
    ]
    for what, frame, code in cases:
        ref += 1
        frame = dict(frame, ref=ref)
        await c.send(frame)
        await expect_error_frame(c, code, what, ref=ref)
    await b.still_fine("after field errors")
    # None of the failed publishes published anything; none of the subscribes subscribed.
    check_eq(s.channel_info(ch)["last_seq"], 0, "failed publishes left the channel empty")
    check_eq(s.channel_info(ch)["subscribers"], 0, "failed subscribes did not subscribe")
    await c.close()
    await b.close()


BAD_NAMES = [
    ("empty", ""),
    ("256 bytes", "x" * 256),
    ("256 bytes of 2-byte chars", "é" * 128),
    ("300 bytes", "y" * 300),
    ("space inside", "a b"),
    ("leading space", " a"),
    ("trailing space", "a "),
    ("tab", "a\tb"),
    ("newline", "a\nb"),
    ("carriage return", "a\rb"),
    ("NUL", "a\x00b"),
    ("control 0x01", "a\x01b"),
    ("DEL 0x7f", "a\x7fb"),
    ("C1 NEL U+0085", "a\u0085b"),
    ("no-break space U+00A0", "a\u00a0b"),
    ("ideographic space U+3000", "a\u3000b"),
    ("line separator U+2028", "a\u2028b"),
    ("em space U+2003", "a\u2003b"),
    ("zero width space U+200B (Cf)", "a\u200bb"),
    ("left-to-right mark U+200E (Cf)", "a\u200eb"),
    ("BOM U+FEFF (Cf)", "\ufeffab"),
    ("soft hyphen U+00AD (Cf)", "a\u00adb"),
    ("$ prefix", "$sys"),
    ("$ alone", "$"),
    ("$ prefix namespaced", "$internal:stats"),
]


async def test_bad_channel_names_get_40001():
    s = server()
    b = Bystander(s)
    await b.start()
    c = await Client.connect(s)
    ref = 1000
    for what, name in BAD_NAMES:
        for op, extra in (("subscribe", {}), ("publish", {"data": 1})):
            ref += 1
            await c.send(dict({"op": op, "channel": name, "ref": ref}, **extra))
            code = (40000, 40001) if "\x00" in name else 40001  # a JSON parser may refuse \u0000
            await expect_error_frame(c, code, "%s with channel %s" % (op, what),
                                     ref=None if "\x00" in name else ref)
    await b.still_fine("after bad names")
    # Not reserved: '$' inside a name, and a 255-byte name of 2-byte chars plus one.
    for name in ("a$b", "é" * 127 + "a"):
        r = await c.call("publish", channel=name, data=1)
        check_eq(r.get("op"), "ok", "publish on %r is valid (reply %r)" % (name, r))
    await c.close()
    await b.close()


async def test_size_limit_exact_boundary_json():
    s = server()
    b = Bystander(s)
    await b.start()
    c = await Client.connect(s)
    ch = "size:%d" % time.time_ns()
    await c.subscribe(ch)
    # The size is the byte length of the JSON text of data: a string of n ASCII chars is n + 2.
    at_limit = "a" * (LIMIT - 2)
    r = await c.call("publish", channel=ch, data=at_limit)
    check_eq(r.get("op"), "ok", "data of exactly %d bytes is accepted (reply %r)" % (LIMIT, str(r)[:200]))
    m = await c.message(ch)
    check_eq(len(m["data"]), LIMIT - 2, "the 64 KiB message is delivered whole")
    r = await c.call("publish", channel=ch, data="a" * (LIMIT - 1))
    check_eq(r.get("op"), "error", "data of %d bytes is refused" % (LIMIT + 1))
    T.check_error(r["error"], 41300, "one byte over the limit")
    await c.alive("after 41300")
    # Multi-byte characters count as bytes: 2-byte 'é' x 32767 + quotes = 65536 bytes.
    r = await c.call("publish", channel=ch, data="é" * ((LIMIT - 2) // 2))
    check_eq(r.get("op"), "ok", "64 KiB of 2-byte chars accepted")
    r = await c.call("publish", channel=ch, data="é" * ((LIMIT - 2) // 2) + "a")
    check_eq(r.get("op"), "error", "64 KiB + 1 of 2-byte chars refused")
    T.check_error(r["error"], 41300, "multi-byte data over the limit")
    # Objects too.
    r = await c.call("publish", channel=ch, data={"k": "b" * LIMIT})
    check_eq(r.get("op"), "error", "an object over the limit")
    T.check_error(r["error"], 41300, "object over the limit")
    await b.still_fine("after 41300s")
    check_eq(s.channel_info(ch)["last_seq"], 2, "only the two in-limit messages were published")
    await c.close()
    await b.close()


async def test_size_limit_base64_counts_decoded_bytes():
    s = server()
    c = await Client.connect(s)
    ch = "size64:%d" % time.time_ns()
    ok_data = base64.b64encode(b"\xab" * LIMIT).decode()
    r = await c.call("publish", channel=ch, data=ok_data, encoding="base64")
    check_eq(r.get("op"), "ok", "base64 of exactly %d decoded bytes accepted (%r)" % (LIMIT, str(r)[:200]))
    big = base64.b64encode(b"\xab" * (LIMIT + 1)).decode()
    r = await c.call("publish", channel=ch, data=big, encoding="base64")
    check_eq(r.get("op"), "error", "base64 of %d decoded bytes refused" % (LIMIT + 1))
    T.check_error(r["error"], 41300, "base64 over the limit")
    await c.alive("after base64 41300")
    await c.close()


async def test_oversize_frame_under_twice_limit_keeps_connection():
    c = await Client.connect(server())
    data = "z" * (2 * LIMIT - 200)  # the frame stays just under 2 x 64 KiB
    frame = json.dumps({"op": "publish", "ref": 1, "channel": "big", "data": data})
    check(len(frame) <= 2 * LIMIT, "frame under twice the limit", len(frame))
    await c.send(frame)
    f = await c.frame()
    check_eq((f.get("op"), f.get("ref")), ("error", 1), "error reply with ref")
    T.check_error(f["error"], 41300, "oversize message in a frame under 2x")
    await c.alive("after oversize message")
    await c.close()


async def test_frame_over_twice_limit_closed_1009():
    s = server()
    b = Bystander(s)
    await b.start()
    c = await Client.connect(s)
    frame = json.dumps({"op": "publish", "ref": 1, "channel": "huge", "data": "q" * (2 * LIMIT + 10)})
    check(len(frame) > 2 * LIMIT, "frame over twice the limit", len(frame))
    await c.send(frame)
    frames, code, reason = await c.expect_close()
    errors = [f for f in frames if isinstance(f, dict) and f.get("op") == "error"]
    check(errors, "an error frame comes before the close", frames[:3])
    T.check_error(errors[0]["error"], 41300, "error frame before 1009")
    check_eq(code, 1009, "close code for a frame over twice the limit (reason %r)" % (reason,))
    await b.still_fine("after another client's 1009")
    await b.close()


def test_frame_over_twice_limit_raw_close_handshake():
    """The same on the wire: error frame, close frame 1009, and after the
    client's answering close nothing more (a second close is what browsers
    report as 1006)."""
    s = server()
    raw = T.RawWS(s.port)
    raw.recv_message()  # connected
    raw.send_frame(0x1, json.dumps({"op": "publish", "channel": "huge", "data": "q" * (2 * LIMIT + 10)}).encode())
    kinds = []
    for _ in range(10):
        try:
            kind, payload = raw.recv_message()
        except EOFError:
            kinds.append("EOF")
            break
        kinds.append(kind)
        if kind == "close":
            break
    check_eq(kinds[-1], "close", "a close frame ends it (frames %r)" % kinds)
    check_eq(T.close_code(payload), 1009, "close code")
    check_eq(kinds[0], "text", "the error frame first")
    after = raw.answer_close(payload)
    check(not after, "nothing after the 1009 close frame (got %r)" % (after,))
    raw.close()


async def test_fragmented_message_over_twice_limit():
    """A message over twice the limit sent in 16 KiB fragments: the server must
    bound what it buffers. Either it answers 41300 and stays open, or it sends
    the error frame and closes with 1009; nobody else is affected."""
    s = server()
    c = await Client.connect(s)
    body = json.dumps({"op": "publish", "ref": 1, "channel": "huge", "data": "q" * (3 * LIMIT)})
    parts = [body[i:i + 16384] for i in range(0, len(body), 16384)]
    try:
        await c.ws.send(iter(parts))
    except websockets.ConnectionClosed:
        pass
    try:
        f = await c.frame()
    except websockets.ConnectionClosed as e:
        raise T.TestFailure("closed without an error frame first (close %r)" % (e.rcvd,))
    check_eq(f.get("op"), "error", "error frame for a fragmented message over 2x (got %r)" % (f,))
    T.check_error(f["error"], 41300, "fragmented oversize message")
    try:
        await c.ping()
        still_open = True
    except websockets.ConnectionClosed as e:
        still_open = False
        check(e.rcvd is not None and e.rcvd.code == 1009,
              "if the connection ends, it ends with close 1009", e.rcvd)
    print("  fragmented 3x message: %s" % ("41300, connection kept" if still_open else "41300 then close 1009"))
    b = Bystander(s)
    await b.start()
    await b.still_fine("after a fragmented oversize message")
    await b.close()


async def test_many_errors_do_not_close():
    """A burst of bad frames neither closes the connection nor loses later good ones."""
    s = server()
    c = await Client.connect(s)
    ch = "burst:%d" % time.time_ns()
    for i in range(200):
        await c.send("{bad json %d" % i)
    await c.subscribe(ch)
    r = await c.publish(ch, "good")
    m = await c.message(ch)
    check_eq(m["seq"], r["seq"], "good frames after a burst of bad ones")
    errs = [f for f in c.backlog if f.get("op") == "error"]
    check_eq(len(errs), 200, "one error per bad frame")
    await c.close()


def test_zz_server_exits_cleanly():
    """Last: the shared server stops on SIGTERM with exit code 0 and never crashed."""
    SHARED.finish()


if __name__ == "__main__":
    try:
        T.main(globals())
    finally:
        SHARED.cleanup()
