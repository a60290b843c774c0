"""WebSocket channel ops against the contract, as python3-websockets clients
would use them: connected frame, subprotocol, subscribe / unsubscribe /
publish / ping with and without ref, message objects, idempotency keys."""

import asyncio
import base64
import time

import websockets

import ternlib as T
from ternlib import Client, check, check_eq

SHARED = T.Shared()


def server():
    return SHARED.get()


async def test_connected_frame_and_subprotocol():
    s = server()
    c = await Client.connect(s)
    check_eq(c.ws.subprotocol, "tern.v1.json", "server confirms the subprotocol it chose")
    f = c.connected
    check(isinstance(f.get("connection_id"), str) and f["connection_id"], "connection_id is a non-empty string", f)
    check_eq(f.get("heartbeat_ms"), 15000, "default heartbeat_ms")
    check_eq(f.get("max_message_bytes"), 65536, "default max_message_bytes")
    c2 = await Client.connect(s)
    check(c2.connected["connection_id"] != f["connection_id"], "connection ids differ", f, c2.connected)
    await c.close()
    await c2.close()


async def test_no_subprotocol_offered_defaults_to_json():
    s = server()
    c = await Client.connect(s, subprotocols=None)
    r = await c.ping()
    check_eq(r.get("ref"), 1, "pong carries the ref")
    ch = "nosub:%d" % time.time_ns()
    await c.subscribe(ch)
    p = await c.publish(ch, {"x": 1})
    m = await c.message(ch)
    check_eq(m["seq"], p["seq"], "message seq on a connection without subprotocol")
    await c.close()


async def test_subprotocol_chosen_among_several():
    c = await Client.connect(server(), subprotocols=["x.unknown", "tern.v1.json"])
    check_eq(c.ws.subprotocol, "tern.v1.json", "the server picks tern.v1.json among the offered ones")
    await c.ping()
    await c.close()


async def test_binary_frame_on_json_protocol():
    """tern.v1.json speaks text frames. A binary frame may be read as the same
    JSON (lenient) or refused with an error frame (and, if that error ends the
    connection, a 4000 close); binary garbage is always an error, never a crash."""
    s = server()
    c = await Client.connect(s)
    await c.ws.send(b'{"op":"ping","ref":1}')
    f = await c.frame()
    check(f.get("op") in ("pong", "error"), "a binary JSON frame is answered (pong or error)", f)
    if f["op"] == "error":
        T.check_error(f["error"], (40000, 41500), "binary frame")
    alive = True
    try:
        await c.ping()
        await c.ws.send(b"\xff\xfe\x00garbage")
        f = await c.frame()
        check_eq(f.get("op"), "error", "binary garbage gets an error frame (got %r)" % (f,))
        T.check_error(f["error"], 40000, "binary garbage")
        await c.ping()
    except websockets.ConnectionClosed as e:
        alive = False
        check(e.rcvd is not None and e.rcvd.code == 4000, "if it ends the connection, with close 4000", e.rcvd)
    check(s.proc.poll() is None, "server alive after binary frames")
    await c.close()


async def test_ping_pong_refs():
    c = await Client.connect(server())
    for ref in (0, 1, 7, 2 ** 31, 2 ** 40):
        await c.send({"op": "ping", "ref": ref})
        f = await c.frame()
        check_eq(f, {"op": "pong", "ref": ref}, "pong for ref %d" % ref)
    await c.close()


async def test_subscribe_reply_seq_is_last_seq():
    s = server()
    ch = "seq:%d" % time.time_ns()
    c = await Client.connect(s)
    r = await c.subscribe(ch)
    check_eq(r.get("seq"), 0, "subscribe ok seq on a channel never used")
    pub = await Client.connect(s)
    for i in range(3):
        p = await pub.publish(ch, i)
        check_eq(p["seq"], i + 1, "seq starts at 1 and rises by 1")
    c2 = await Client.connect(s)
    r2 = await c2.subscribe(ch)
    check_eq(r2.get("seq"), 3, "subscribe ok seq = channel's last seq")
    # Plain subscribe gets no history, only live messages.
    p = await pub.publish(ch, "live")
    m = await c2.message(ch)
    check_eq((m["seq"], m["data"]), (4, "live"), "first message after a plain subscribe is the live one")
    for cl in (c, c2, pub):
        await cl.close()


async def test_publish_and_receive_message_object():
    s = server()
    ch = "obj:%d" % time.time_ns()
    sub = await Client.connect(s)
    pub = await Client.connect(s)
    await sub.subscribe(ch)
    t0 = int(time.time() * 1000)
    r = await pub.publish(ch, {"text": "hi", "n": [1, 2, 3]})
    m = await sub.message(ch)
    T.check_message_obj(m, ch, "message frame")
    check_eq(m["op"], "message", "op")
    check_eq(m["seq"], r["seq"], "message seq = publish ok seq")
    check_eq(m["id"], r["id"], "message id = publish ok id")
    check_eq(m["data"], {"text": "hi", "n": [1, 2, 3]}, "data round-trips")
    check("name" not in m, "message leaves out name when not given", m)
    check("encoding" not in m, "no encoding field for JSON data", m)
    check(t0 - 5000 <= m["ts"] <= int(time.time() * 1000) + 5000, "ts is epoch ms of the publish", m["ts"], t0)
    # With a name
    r = await pub.publish(ch, 5, name="evt")
    m = await sub.message(ch)
    check_eq((m["seq"], m.get("name"), m["data"]), (r["seq"], "evt", 5), "message with name")
    await sub.close()
    await pub.close()


async def test_data_of_every_json_type_round_trips():
    s = server()
    ch = "types:%d" % time.time_ns()
    c = await Client.connect(s)
    await c.subscribe(ch)
    values = [None, True, False, 0, -1, 3.5, 1e300, "", "text", "ünïcödé ✓ 𝄞", "\"quoted\"\n\\",
              [], [1, "a", None], {}, {"nested": {"a": [1, {"b": None}]}}]
    for v in values:
        r = await c.publish(ch, v)
        m = await c.message(ch)
        check_eq(m["seq"], r["seq"], "seq for %r" % (v,))
        check_eq(m["data"], v, "data %r round-trips" % (v,))
        check_eq(type(m["data"]), type(v), "data type of %r" % (v,))
    await c.close()


async def test_base64_encoding_round_trips():
    s = server()
    ch = "b64:%d" % time.time_ns()
    c = await Client.connect(s)
    await c.subscribe(ch)
    raw = bytes(range(256)) * 3
    b64 = base64.b64encode(raw).decode()
    r = await c.publish(ch, b64, encoding="base64")
    m = await c.message(ch)
    check_eq(m.get("encoding"), "base64", "message carries encoding base64")
    check_eq(base64.b64decode(m["data"]), raw, "base64 data decodes to the bytes sent")
    check_eq(m["seq"], r["seq"], "seq")
    hist = s.history(ch)
    check_eq(hist[-1].get("encoding"), "base64", "REST history carries encoding too")
    check_eq(base64.b64decode(hist[-1]["data"]), raw, "REST history data")
    await c.close()


async def test_publisher_receives_own_messages_when_subscribed():
    s = server()
    ch = "own:%d" % time.time_ns()
    c = await Client.connect(s)
    await c.subscribe(ch)
    r = await c.publish(ch, "mine")
    m = await c.message(ch)
    check_eq((m["seq"], m["data"]), (r["seq"], "mine"), "own message delivered")
    # Not subscribed: nothing comes back.
    other = "own-other:%d" % time.time_ns()
    await c.publish(other, "x")
    await c.sync()
    check(not [f for f in c.backlog if f.get("op") == "message"], "no message for a channel not subscribed", c.backlog)
    await c.close()


async def test_subscribe_twice_is_noop():
    s = server()
    ch = "twice:%d" % time.time_ns()
    c = await Client.connect(s)
    await c.subscribe(ch)
    r = await c.subscribe(ch)
    check_eq(r["op"], "ok", "second subscribe ok")
    pub = await Client.connect(s)
    p = await pub.publish(ch, 1)
    m = await c.message(ch)
    check_eq(m["seq"], p["seq"], "delivered")
    await c.sync()
    dups = [f for f in c.backlog if f.get("op") == "message"]
    check(not dups, "a second subscribe does not duplicate delivery", dups)
    info = s.channel_info(ch)
    check_eq(info["subscribers"], 1, "subscribers counts the connection once")
    # Again with rewind or from_seq: still a no-op, so no history is replayed.
    for opts in ({"rewind": 10}, {"from_seq": 0}):
        r = await c.subscribe(ch, **opts)
        check_eq(r.get("seq"), p["seq"], "no-op subscribe %r still answers the last seq" % (opts,))
    await c.sync()
    replayed = [f for f in c.backlog if f.get("op") == "message"]
    check(not replayed, "subscribing again with rewind/from_seq replays nothing", replayed)
    p2 = await pub.publish(ch, 2)
    m = await c.message(ch)
    check_eq(m["seq"], p2["seq"], "still subscribed after the no-op subscribes")
    await c.sync()
    check(not [f for f in c.backlog if f.get("op") == "message"], "and still exactly once")
    await c.close()
    await pub.close()


async def test_unsubscribe_stops_delivery():
    s = server()
    ch = "unsub:%d" % time.time_ns()
    c = await Client.connect(s)
    pub = await Client.connect(s)
    r = await c.ok("unsubscribe", channel=ch)
    check_eq(r["op"], "ok", "unsubscribe when not subscribed is ok")
    await c.subscribe(ch)
    await pub.publish(ch, "before")
    m = await c.message(ch)
    check_eq(m["data"], "before", "received while subscribed")
    # Publishes racing with the unsubscribe: after its ok, no message may follow.
    racing = asyncio.ensure_future(asyncio.gather(*[pub.publish(ch, "race%d" % i) for i in range(1)]))
    await c.ok("unsubscribe", channel=ch)
    c.backlog = [f for f in c.backlog if f.get("op") != "message"]
    await racing
    for i in range(5):
        await pub.publish(ch, "after%d" % i)
    # Another subscriber proves they were delivered, then our round trip shows none came to us.
    probe = await Client.connect(s)
    await probe.subscribe(ch, rewind=5)
    await probe.messages(ch, 5)
    await asyncio.sleep(0.2)
    await c.sync()
    leaked = [f for f in c.backlog if f.get("op") == "message"]
    check(not leaked, "no message of that channel follows the unsubscribe ok", leaked)
    check_eq(s.channel_info(ch)["subscribers"], 1, "subscribers after unsubscribe (only the probe)")
    for cl in (c, pub, probe):
        await cl.close()


async def test_no_ref_success_gets_no_reply():
    s = server()
    ch = "noref:%d" % time.time_ns()
    c = await Client.connect(s)
    await c.send({"op": "publish", "channel": ch, "data": 1})
    await c.send({"op": "subscribe", "channel": ch + "x"})
    await c.send({"op": "unsubscribe", "channel": ch + "x"})
    await c.send({"op": "ping", "ref": 99})
    f = await c.frame()
    check_eq(f, {"op": "pong", "ref": 99}, "next frame is the pong: ref-less successes get no reply")
    # The pong may overtake the publish's durable write; the publish still happens.
    deadline = time.monotonic() + T.WAIT_S
    while s.channel_info(ch)["last_seq"] != 1 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    check_eq(s.channel_info(ch)["last_seq"], 1, "the ref-less publish happened")
    await c.close()


async def test_no_ref_error_is_reported_without_ref():
    c = await Client.connect(server())
    await c.send({"op": "subscribe", "channel": ""})
    f = await c.frame()
    check_eq(f.get("op"), "error", "error frame for a ref-less bad frame")
    check("ref" not in f, "error for a frame without ref carries no ref", f)
    T.check_error(f.get("error"), 40001, "ref-less empty channel")
    await c.alive("after ref-less error")
    await c.close()


async def test_idempotency_key_publishes_once():
    s = server()
    ch = "idem:%d" % time.time_ns()
    sub = await Client.connect(s)
    await sub.subscribe(ch)
    pub = await Client.connect(s)
    r1 = await pub.publish(ch, {"v": 1}, idempotency_key="k1")
    r2 = await pub.publish(ch, {"v": 1}, idempotency_key="k1")
    check_eq((r2["seq"], r2["id"]), (r1["seq"], r1["id"]), "same key returns the first seq and id")
    # From another connection, even with other data: still the first.
    other = await Client.connect(s)
    r3 = await other.publish(ch, {"v": 2}, idempotency_key="k1")
    check_eq((r3["seq"], r3["id"]), (r1["seq"], r1["id"]), "same key from another connection")
    r4 = await pub.publish(ch, {"v": 1}, idempotency_key="k2")
    check_eq(r4["seq"], r1["seq"] + 1, "a different key publishes")
    # The same key on another channel is independent.
    r5 = await pub.publish(ch + ":b", {"v": 1}, idempotency_key="k1")
    check_eq(r5["seq"], 1, "same key on another channel publishes there")
    ms = await sub.messages(ch, 2)
    check_eq([m["seq"] for m in ms], [r1["seq"], r4["seq"]], "subscriber sees each message once")
    await sub.sync()
    check(not [f for f in sub.backlog if f.get("op") == "message"], "no duplicate delivery", sub.backlog)
    check_eq(s.channel_info(ch)["last_seq"], r4["seq"], "last_seq")
    for cl in (sub, pub, other):
        await cl.close()


async def test_idempotency_window_configurable():
    """idempotency_window_s 1: within it a key publishes once; well after it the
    same key publishes a new message (the default window is 2 minutes)."""
    with T.Server(config={"idempotency_window_s": 1}) as s:
        ch = "idem-win:%d" % time.time_ns()
        c = await Client.connect(s)
        r1 = await c.publish(ch, 1, idempotency_key="w")
        r2 = await c.publish(ch, 1, idempotency_key="w")
        check_eq(r2["seq"], r1["seq"], "same key within the window")
        await asyncio.sleep(3.0)
        r3 = await c.publish(ch, 1, idempotency_key="w")
        check_eq(r3["seq"], r1["seq"] + 1, "same key after the window publishes again")
        check(r3["id"] != r1["id"], "with a new id", r1, r3)
        await c.close()


async def test_channel_names_valid_edge_cases():
    s = server()
    c = await Client.connect(s)
    stamp = str(time.time_ns())
    names = ["chat:lobby:" + stamp, "a", "x" * 255, "ünï:" + stamp, "日本語" * 10 + stamp,
             "a.b-c_d/e|f:" + stamp, "emoji-😀-" + stamp, "semi;colon,comma*star?q#h" + stamp]
    for name in names:
        check(1 <= len(name.encode()) <= 255, "test name within 1-255 bytes", name)
        before = await c.call("subscribe", channel=name)
        check_eq(before.get("op"), "ok", "subscribe %r" % name)
        r = await c.publish(name, name)
        m = await c.message(name)
        check_eq((m["channel"], m["data"], m["seq"]), (name, name, r["seq"]), "message on %r" % name)
        await c.ok("unsubscribe", channel=name)
    await c.close()


async def test_subscriptions_counted_in_rest():
    s = server()
    ch = "count:%d" % time.time_ns()
    cs = [await Client.connect(s) for _ in range(3)]
    for c in cs:
        await c.subscribe(ch)
    check_eq(s.channel_info(ch)["subscribers"], 3, "three subscribers")
    await cs[0].close()
    deadline = time.monotonic() + T.WAIT_S
    while s.channel_info(ch)["subscribers"] != 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    check_eq(s.channel_info(ch)["subscribers"], 2, "a closed connection is no longer a subscriber")
    for c in cs[1:]:
        await c.close()


async def test_many_channels_one_connection():
    s = server()
    stamp = time.time_ns()
    c = await Client.connect(s)
    chans = ["many:%d:%d" % (stamp, i) for i in range(50)]
    for ch in chans:
        await c.subscribe(ch)
    pub = await Client.connect(s)
    for ch in chans:
        await pub.publish(ch, ch)
    got = {}
    for _ in chans:
        m = await c.message()
        got[m["channel"]] = m["data"]
    check_eq(got, {ch: ch for ch in chans}, "one message on each of 50 channels")
    await c.close()
    await pub.close()


def test_zz_server_exits_cleanly():
    """Last: the shared server stops on SIGTERM with exit code 0 and never crashed."""
    SHARED.finish()


if __name__ == "__main__":
    try:
        T.main(globals())
    finally:
        SHARED.cleanup()
