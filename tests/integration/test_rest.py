"""The REST surface for channels, driven with curl (a third-party client) and
urllib: POST/GET messages, GET channel, /healthz, /metrics, percent-encoded
names, idempotency keys, and every error the contract names for REST."""

import urllib.request
import asyncio
import base64
import json
import time

import ternlib as T
from ternlib import Client, check, check_eq, curl, quote

SHARED = T.Shared()


def server():
    return SHARED.get()


def uniq(prefix):
    return "%s:%d" % (prefix, time.time_ns())


def curl_json(method, path, data=None, headers=("Content-Type: application/json",)):
    s = server()
    args = ["-X", method]
    for h in headers:
        args += ["-H", h]
    code, body = curl(*args, s.base + path, data=data)
    try:
        return code, json.loads(body)
    except ValueError:
        return code, body


def test_healthz():
    code, body = curl(server().base + "/healthz")
    check_eq(code, 200, "GET /healthz")


def test_post_single_message_with_curl():
    ch = uniq("rest-one")
    code, body = curl_json("POST", "/v1/channels/%s/messages" % quote(ch), data='{"name":"evt","data":{"a":1}}')
    check_eq(code, 201, "POST one message (body %r)" % (body,))
    check(isinstance(body, dict) and isinstance(body.get("messages"), list), "body has messages", body)
    check_eq(len(body["messages"]), 1, "one message in the reply")
    m = body["messages"][0]
    check_eq(m.get("seq"), 1, "first seq of a new channel")
    check(isinstance(m.get("id"), str) and m["id"], "id", m)
    code, hist = curl_json("GET", "/v1/channels/%s/messages" % quote(ch))
    check_eq(code, 200, "GET messages")
    check_eq(len(hist["messages"]), 1, "history holds it")
    h = hist["messages"][0]
    T.check_message_obj(h, ch, "REST message object")
    check("op" not in h, "REST message objects have no op", h)
    check_eq((h["seq"], h["id"], h.get("name"), h["data"]), (1, m["id"], "evt", {"a": 1}), "stored message")


def test_post_array_and_order():
    s = server()
    ch = uniq("rest-arr")
    msgs = [{"data": i} for i in range(5)] + [{"name": "n", "data": "five"}]
    code, body = curl_json("POST", "/v1/channels/%s/messages" % quote(ch), data=json.dumps(msgs))
    check_eq(code, 201, "POST an array (body %r)" % (body,))
    seqs = [m["seq"] for m in body["messages"]]
    check_eq(seqs, [1, 2, 3, 4, 5, 6], "one entry per message, in order, consecutive seqs")
    check_eq(len(set(m["id"] for m in body["messages"])), 6, "distinct ids")
    hist = s.history(ch)
    check_eq([m["data"] for m in hist], [0, 1, 2, 3, 4, "five"], "data in seq order")
    check("name" not in hist[0], "no name when not given", hist[0])
    check_eq(hist[5].get("name"), "n", "name when given")
    check_eq(s.channel_info(ch), {"channel": ch, "subscribers": 0, "last_seq": 6}, "GET channel")


def test_get_messages_directions_limits():
    s = server()
    ch = uniq("rest-dir")
    s.publish_rest(ch, [{"data": i} for i in range(1, 11)])  # seq i has data i
    fw = s.history(ch)
    check_eq([m["seq"] for m in fw], list(range(1, 11)), "forwards default: oldest first")
    check_eq([m["data"] for m in fw], list(range(1, 11)), "data matches seq")
    check_eq([m["seq"] for m in s.history(ch, limit=3)], [1, 2, 3], "forwards limit 3")
    check_eq([m["seq"] for m in s.history(ch, from_seq=7)], [8, 9, 10], "forwards from_seq 7: seq > 7")
    check_eq([m["seq"] for m in s.history(ch, from_seq=7, limit=2)], [8, 9], "forwards from_seq 7 limit 2")
    check_eq([m["seq"] for m in s.history(ch, from_seq=0)], list(range(1, 11)), "forwards from_seq 0")
    check_eq(s.history(ch, from_seq=10), [], "forwards from_seq = last: nothing")
    check_eq([m["seq"] for m in s.history(ch, direction="forwards")], list(range(1, 11)), "direction=forwards")
    bw = s.history(ch, direction="backwards")
    check_eq([m["seq"] for m in bw], list(range(10, 0, -1)), "backwards: newest first")
    check_eq([m["seq"] for m in s.history(ch, direction="backwards", limit=2)], [10, 9], "backwards limit 2")
    check_eq([m["seq"] for m in s.history(ch, direction="backwards", from_seq=4)], [3, 2, 1], "backwards from_seq 4: seq < 4")
    check_eq([m["seq"] for m in s.history(ch, direction="backwards", from_seq=1)], [], "backwards from_seq 1: nothing")
    check_eq([m["seq"] for m in s.history(ch, direction="backwards", from_seq=6, limit=2)], [5, 4], "backwards from_seq 6 limit 2")
    # Default limit is 100.
    ch2 = uniq("rest-lim")
    s.publish_rest(ch2, [{"data": i} for i in range(150)])
    check_eq(len(s.history(ch2)), 100, "default limit 100")
    check_eq(s.history(ch2)[0]["seq"], 1, "default limit: starts at the oldest")
    check_eq(s.history(ch2, direction="backwards")[0]["seq"], 150, "backwards default: newest")
    check_eq(len(s.full_history(ch2)), 150, "paging forwards with from_seq reaches all 150")
    code, _, body = s.http("GET", "/v1/channels/%s/messages" % quote(uniq("never")))
    check_eq((code, body), (200, {"messages": []}), "history of a channel never used")


def test_get_channel_never_used_and_subscribers():
    s = server()
    ch = uniq("rest-info")
    code, body = curl_json("GET", "/v1/channels/%s" % quote(ch))
    check_eq((code, body), (200, {"channel": ch, "subscribers": 0, "last_seq": 0}), "channel never used")

    async def go():
        c1 = await Client.connect(s)
        c2 = await Client.connect(s)
        await c1.subscribe(ch)
        await c2.subscribe(ch)
        info = s.channel_info(ch)
        check_eq(info["subscribers"], 2, "two WebSocket subscribers")
        await c1.close()
        await c2.close()
    T.run(go)


def test_percent_encoded_names_are_the_same():
    s = server()
    stamp = time.time_ns()
    ch = "chat:lobby-%d" % stamp
    s.http("POST", "/v1/channels/chat%%3Alobby-%d/messages" % stamp, body={"data": 1})
    status, _, body = s.http("POST", "/v1/channels/chat:lobby-%d/messages" % stamp, body={"data": 2})
    check_eq(status, 201, "POST with a literal ':'")
    check_eq(body["messages"][0]["seq"], 2, "chat%3Alobby and chat:lobby are one channel")
    status, _, info = s.http("GET", "/v1/channels/chat%%3alobby-%d" % stamp)
    check_eq((status, info.get("channel"), info.get("last_seq")), (200, ch, 2), "lower-case %3a too")
    uni = "ünï 🎉".replace(" ", "-") + str(stamp)
    s.publish_rest(uni, {"data": "u"})
    hist = s.history(uni)
    check_eq((hist[0]["channel"], hist[0]["data"]), (uni, "u"), "UTF-8 name percent-encoded")
    # '/' and '?' and '%' inside a name travel percent-encoded and stay part of the name.
    for odd in ("a/b-%d" % stamp, "q?x=1&y-%d" % stamp, "pct%%41-%d" % stamp, "hash#frag-%d" % stamp):
        out = s.publish_rest(odd, {"data": odd})
        check_eq(out[0]["seq"], 1, "first message on %r" % odd)
        info = s.channel_info(odd)
        check_eq((info["channel"], info["last_seq"]), (odd, 1), "GET channel %r" % odd)
        hist = s.history(odd)
        check_eq([(m["channel"], m["data"]) for m in hist], [(odd, odd)], "history of %r" % odd)
    long_name = "n" * 255
    s.publish_rest(long_name, {"data": 1})
    check(s.channel_info(long_name)["last_seq"] >= 1, "255-byte name works over REST")


def test_rest_message_visible_to_websocket_subscriber():
    s = server()
    ch = uniq("rest-ws")

    async def go():
        c = await Client.connect(s)
        await c.subscribe(ch)
        out = s.publish_rest(ch, [{"data": "a"}, {"name": "e", "data": "b"}])
        ms = await c.messages(ch, 2)
        check_eq([(m["seq"], m["id"]) for m in ms], [(o["seq"], o["id"]) for o in out], "seq/id match the 201")
        check_eq([m["data"] for m in ms], ["a", "b"], "data")
        check_eq(ms[1].get("name"), "e", "name")
        await c.close()
    T.run(go)


def test_base64_over_rest():
    s = server()
    ch = uniq("rest-b64")
    raw = bytes(range(256))
    out = s.publish_rest(ch, {"data": base64.b64encode(raw).decode(), "encoding": "base64"})
    h = s.history(ch)[0]
    check_eq(h.get("encoding"), "base64", "encoding kept")
    check_eq(base64.b64decode(h["data"]), raw, "bytes kept")
    check_eq(h["seq"], out[0]["seq"], "seq")


def test_idempotency_key_over_rest_and_across_transports():
    s = server()
    ch = uniq("rest-idem")
    a = s.publish_rest(ch, {"data": 1, "idempotency_key": "k"})[0]
    b = s.publish_rest(ch, {"data": 1, "idempotency_key": "k"})[0]
    check_eq((b["seq"], b["id"]), (a["seq"], a["id"]), "same key over REST: first seq and id")
    arr = s.publish_rest(ch, [{"data": 2, "idempotency_key": "k"}, {"data": 3, "idempotency_key": "k3"}])
    check_eq((arr[0]["seq"], arr[0]["id"]), (a["seq"], a["id"]), "same key inside an array")
    check_eq(arr[1]["seq"], a["seq"] + 1, "new key in the same array publishes")

    async def go():
        c = await Client.connect(s)
        r = await c.publish(ch, 9, idempotency_key="k3")
        check_eq((r["seq"], r["id"]), (arr[1]["seq"], arr[1]["id"]), "WebSocket publish with a key used over REST")
        r2 = await c.publish(ch, 10, idempotency_key="wskey")
        again = s.publish_rest(ch, {"data": 10, "idempotency_key": "wskey"})[0]
        check_eq((again["seq"], again["id"]), (r2["seq"], r2["id"]), "REST publish with a key used over WebSocket")
        await c.close()
    T.run(go)
    check_eq(s.channel_info(ch)["last_seq"], 3, "three messages in all")


def test_rest_bad_bodies():
    s = server()
    ch = uniq("rest-bad")
    path = "/v1/channels/%s/messages" % quote(ch)
    cases = [
        ("bad JSON", "{"),
        ("not JSON", "hello"),
        ("empty body", ""),
        ("a number", "42"),
        ("a string", "\"x\""),
        ("null", "null"),
        ("missing data", "{\"name\":\"x\"}"),
        ("name not a string", "{\"name\":5,\"data\":1}"),
        ("array with a bad element", "[{\"data\":1},{\"name\":\"x\"}]"),
        ("array of numbers", "[1,2]"),
        ("unknown encoding", "{\"data\":\"aGk=\",\"encoding\":\"rot13\"}"),
        ("bad base64", "{\"data\":\"%%%\",\"encoding\":\"base64\"}"),
    ]
    for what, raw in cases:
        code, body = curl_json("POST", path, data=raw)
        T.check_rest_error(code, body, 40000, "POST %s" % what)
    check_eq(s.channel_info(ch)["last_seq"], 0, "no bad request published anything")
    # Bad query parameters on GET messages.
    s.publish_rest(ch, {"data": 1})
    for q in ("limit=abc", "limit=-1", "from_seq=-1", "from_seq=x", "direction=sideways"):
        status, _, body = s.http("GET", path + "?" + q)
        T.check_rest_error(status, body, 40000, "GET messages?%s" % q)


def test_rest_bad_names():
    s = server()
    bad = [("$ prefix", "%24sys"), ("$ alone", "%24"), ("256 bytes", "x" * 256), ("space", "a%20b"),
           ("tab", "a%09b"), ("newline", "a%0Ab"), ("control 0x01", "a%01b"), ("DEL", "a%7Fb"),
           ("NBSP", "a%C2%A0b"), ("zero width space (Cf)", "a%E2%80%8Bb"), ("line separator", "a%E2%80%A8b"),
           ("invalid UTF-8", "a%FFb"), ("overlong UTF-8", "a%C0%AFb")]
    failures = []
    for what, enc in bad:
        for method, path in (("POST", "/v1/channels/%s/messages" % enc), ("GET", "/v1/channels/%s" % enc),
                             ("GET", "/v1/channels/%s/messages" % enc)):
            try:
                if method == "POST":
                    code, body = curl_json("POST", path, data='{"data":1}')
                else:
                    code, _, body = s.http("GET", path)
                T.check_rest_error(code, body, 40001, "%s %s (%s)" % (method, path, what))
            except Exception as e:  # keep going: report every bad case at once
                failures.append(str(e)[:300])
                time.sleep(0.3)  # let a crash show as an exit status
            if s.proc.poll() is not None:
                raise T.TestFailure("the server died (exit %r) on %s %s (%s); earlier failures: %r"
                                    % (s.proc.returncode, method, path, what, failures))
    check(not failures, "%d bad-name requests got the wrong answer" % len(failures), *failures)


def test_rest_nul_in_name_refused():
    """A NUL (%00) in a REST path: libwebsockets 4.1's HTTP parser refuses the request
    before Tern sees it and closes the connection without a response (documented in
    docs/protocol.md). Nothing is published, and the server and other clients are unharmed."""
    s = server()
    for method, path in (("POST", "/v1/channels/a%00b/messages"), ("GET", "/v1/channels/a%00b"),
                         ("GET", "/v1/channels/a%00b/messages")):
        try:
            code, _, body = s.http(method, path, raw=b'{"data":1}' if method == "POST" else None,
                                   timeout=10)
            T.check_rest_error(code, body, 40001, "%s %s" % (method, path))
        except T.TestFailure:
            raise
        except Exception as e:  # refused by the HTTP parser: a closed connection
            check("RemoteDisconnected" in repr(e) or "reset" in repr(e).lower(),
                  "%s %s: a 40001 or a refused connection (got %r)" % (method, path, e))
        check(s.proc.poll() is None, "server alive after %s %s" % (method, path))
    code, _, body = s.http("GET", "/v1/channels/a")
    check_eq(code, 200, "channel 'a' info still served")
    check_eq(body["last_seq"], 0, "nothing was published to a truncated name")


def test_hostile_paths_do_not_crash():
    """Odd request targets get some 4xx answer and never take the server down."""
    s = server()
    paths = ["/v1/channels/%00", "/v1/channels/a%00b/messages", "/v1/channels/%", "/v1/channels/%zz",
             "/v1/channels/a%2", "/v1/channels/" + "%41" * 300, "/v1/channels/..%2F..%2Fetc", "/v1/channels/%0D%0A",
             "/v1/channels/%E2%80", "/" + "a" * 4000]
    for p in paths:
        for method in ("GET", "POST"):
            try:
                code, _, _ = s.http(method, p, raw=b'{"data":1}' if method == "POST" else None, timeout=10)
            except Exception as e:
                code = repr(e)
                time.sleep(0.3)
            check(s.proc.poll() is None, "server alive after %s %s (it exited %r)" % (method, p, s.proc.returncode))
            # A 4xx, or (for targets the HTTP parser itself refuses) a closed connection;
            # test_rest_bad_names holds names to the contract's 40001.
            check((isinstance(code, int) and 400 <= code < 500) or "RemoteDisconnected" in str(code)
                  or "reset" in str(code).lower(), "%s %s gets a 4xx or is refused (got %r)" % (method, p, code))
    status, _, _ = s.http("GET", "/healthz")
    check_eq(status, 200, "healthz after hostile paths")


def test_rest_too_large():
    s = server()
    ch = uniq("rest-big")
    path = "/v1/channels/%s/messages" % quote(ch)
    ok_body = json.dumps({"data": "a" * (65536 - 2)})
    code, body = curl_json("POST", path, data=ok_body)
    check_eq(code, 201, "exactly 64 KiB of data over REST (body %r)" % (str(body)[:200],))
    code, body = curl_json("POST", path, data=json.dumps({"data": "a" * (65536 - 1)}))
    T.check_rest_error(code, body, 41300, "64 KiB + 1 over REST")
    code, body = curl_json("POST", path, data=json.dumps([{"data": 1}, {"data": "b" * 70000}]))
    T.check_rest_error(code, body, 41300, "an array with one oversize message")
    check_eq(s.channel_info(ch)["last_seq"], 1, "only the in-limit message was published")
    # A body over rest_max_body_bytes (1 MiB) is refused with an error, not read whole.
    huge = json.dumps([{"data": "c" * 60000} for _ in range(20)])
    check(len(huge) > 1024 * 1024, "body over 1 MiB", len(huge))
    code, body = curl_json("POST", path, data=huge)
    check(400 <= code < 500, "a body over the REST limit gets a 4xx (got %d)" % code)
    T.check_rest_error(code, body, (41300, 40000), "body over rest_max_body_bytes")
    code, body = curl(s.base + "/healthz")
    check_eq(code, 200, "server fine after a huge body")


def test_unknown_path_404():
    s = server()
    for path in ("/nope", "/v1/nope", "/v2/channels/x", "/v1/queues-typo/x"):
        status, _, body = s.http("GET", path)
        T.check_rest_error(status, body, 40400, "GET %s" % path)


def test_content_type_json():
    s = server()
    status, headers, _ = s.http("GET", "/v1/channels/%s" % quote(uniq("ct")))
    ct = {k.lower(): v for k, v in headers.items()}.get("content-type", "")
    check("application/json" in ct, "REST answers with Content-Type application/json", ct)


def test_cors_for_browsers_on_other_origins():
    """A web app on another origin can call REST: replies carry
    Access-Control-Allow-Origin, and a preflight learns methods and headers."""
    s = server()
    ch = quote(uniq("cors"))
    status, headers, _ = s.http("OPTIONS", "/v1/channels/%s/messages" % ch,
                                headers={"Origin": "http://app.example",
                                         "Access-Control-Request-Method": "POST",
                                         "Access-Control-Request-Headers": "content-type"})
    h = {k.lower(): v for k, v in headers.items()}
    check_eq(status, 204, "preflight status")
    check_eq(h.get("access-control-allow-origin"), "*", "preflight allow-origin")
    check("POST" in h.get("access-control-allow-methods", ""), "preflight allows POST", h)
    check("content-type" in h.get("access-control-allow-headers", "").lower(),
          "preflight allows the content-type header", h)
    status, headers, body = s.http("POST", "/v1/channels/%s/messages" % ch, body={"data": 1},
                                   headers={"Origin": "http://app.example"})
    check_eq(status, 201, "cross-origin publish")
    check_eq({k.lower(): v for k, v in headers.items()}.get("access-control-allow-origin"), "*",
             "publish reply allow-origin")


def test_metrics():
    s = server()
    status, headers, text = s.http("GET", "/metrics")
    check_eq(status, 200, "GET /metrics")
    check(isinstance(text, str), "metrics is text", text)
    for name in ("tern_connections", "tern_subscriptions", "tern_messages_in_total", "tern_messages_out_total",
                 "tern_bytes_out_total", "tern_slow_consumer_closes_total"):
        check(any(l.startswith(name) for l in text.splitlines()), "metric %s present" % name)
    # The store's metrics are the node's: the same /metrics in tern dev, the node's port when split.
    if s.mode == "split":
        with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % s.node_port, timeout=10) as r:
            text = r.read().decode()
    for name in ("tern_store_batches_total", "tern_store_batch_messages_total", "tern_store_commit_seconds_bucket",
                 "tern_store_commit_seconds_sum", "tern_store_commit_seconds_count"):
        check(any(l.startswith(name) for l in text.splitlines()), "metric %s present" % name)
    check("# TYPE tern_store_commit_seconds histogram" in text, "commit seconds is a histogram")
    before = s.metrics()
    ch = uniq("metrics")

    async def go():
        c = await Client.connect(s)
        await c.subscribe(ch)
        m = s.metrics()
        check(T.metric(m, "tern_connections") >= 1, "tern_connections counts us", T.metric(m, "tern_connections"))
        check(T.metric(m, "tern_subscriptions") >= 1, "tern_subscriptions counts us", T.metric(m, "tern_subscriptions"))
        s.publish_rest(ch, [{"data": i} for i in range(7)])
        await c.messages(ch, 7)
        await c.close()
    T.run(go)
    after = s.metrics()
    check(T.metric(after, "tern_messages_in_total") - T.metric(before, "tern_messages_in_total") >= 7, "messages in counted",
          T.metric(before, "tern_messages_in_total"), T.metric(after, "tern_messages_in_total"))
    check(T.metric(after, "tern_messages_out_total") - T.metric(before, "tern_messages_out_total") >= 7, "messages out counted")
    check(T.metric(after, "tern_bytes_out_total") > T.metric(before, "tern_bytes_out_total"), "bytes out counted")
    check(T.metric(after, "tern_store_batches_total") > T.metric(before, "tern_store_batches_total"), "store batches counted")
    check(T.metric(after, "tern_store_batch_messages_total") - T.metric(before, "tern_store_batch_messages_total") >= 7,
          "store batch messages counted")
    check(T.metric(after, "tern_store_commit_seconds_count") > T.metric(before, "tern_store_commit_seconds_count"), "commits timed")


def test_zz_server_exits_cleanly():
    """Last: the shared server stops on SIGTERM with exit code 0 and never crashed."""
    SHARED.finish()


if __name__ == "__main__":
    try:
        T.main(globals())
    finally:
        SHARED.cleanup()
