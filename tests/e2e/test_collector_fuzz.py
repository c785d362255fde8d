"""Generated hostile traffic against a real collector, Mosquitto and PostgreSQL (issue 14): ingest never stops.

Hypothesis draws lists of hostile messages — random bytes, random JSON, deep
nesting, mutated golden-vector payloads, messages of every kind with extreme
numbers and strings — and the test publishes them between valid readings of a
device of its own. After every list the valid readings must be confirmed; at
the end every valid key is stored exactly once, the collector is alive, no
commit failed or was refused (what the contract accepts, the database stores),
and every message the contract rejects is in quarantine with the decoder's
code, `times` counting each copy, and every valid record among the hostile
messages is stored. Bounded: 60 lists, about 1,000 messages, ~15 s.
"""

import hashlib
import json
import random
import re
import struct
import time
import unicodedata
from pathlib import Path

import psycopg
import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from collector.schema import KEYED
from fieldwatch.devservices.collector import CollectorProcess
from fieldwatch.tools.loadgen import ConfirmingPublisher, reading_payload
from fieldwatch.wire import codec, topics

NOW = lambda: int(time.time() * 1000)  # noqa: E731
MAX_UNTIMED = codec.MAX_UNTIMED_MS
VALID_DEV = "fuzzvalid"               # the hostile strategies never draw this id
HOSTILE_DEVS = ("pump-07", "fz-a", "fz-b", "0", "x" * 32)
VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "wire_v1.json"
# Topics the collector subscribes to (topics.COLLECTOR_FILTERS), so every hostile message reaches it.
KIND_TOPICS = ("telemetry/readings", "telemetry/fix", "telemetry/features", "telemetry/wave", "log", "result",
               "status", "telemetry/nope")

EXTREME_INTS = (0, 1, -1, 2 ** 31 - 1, 2 ** 31, codec.MAX_U32, codec.MAX_U32 + 1, 2 ** 47, 2 ** 47 + 1,
                210866803200000, 230000000000000, 2 ** 53, 2 ** 53 + 1, 2 ** 62, 2 ** 62 + 1, 2 ** 63 - 1, 2 ** 63,
                2 ** 64, -2 ** 63, 10 ** 30, 1577836800000, 4102444800000)
EXTREME_NUMBER_TEXT = [str(i) for i in EXTREME_INTS] + ["1e308", "-1e308", "1e999", "-1e999", "1e-320", "0.5",
                                                         "-0.0", "5e0", "1.0", "NaN", "Infinity", "true", "null",
                                                         "\"1\"", "[]", "{}"]


def _segments(x, hex_=False):
    # A vector's payload, written as a string or as segments ([string, count] repeats).
    if isinstance(x, list):
        x = "".join(s if isinstance(s, str) else s[0] * s[1] for s in x)
    return bytes.fromhex(x) if hex_ else x.encode("utf-8")


def _subscribed(topic):
    # True if the collector's filters (topics.COLLECTOR_FILTERS) match the topic and Mosquitto takes it.
    if any(c in "+#" or unicodedata.category(c) in ("Cs", "Cc", "Cn") for c in topic):
        return False
    parts = topic.split("/")
    if parts[:2] != ["fieldwatch", "v1"]:
        return False
    return (len(parts) == 5 and parts[3] == "telemetry") or (len(parts) == 4 and parts[3] in ("log", "result", "status"))


def _vector_messages():
    out = []
    with VECTORS.open(encoding="utf-8") as f:
        for line in f:
            line = line.strip().rstrip(",")
            if not line.startswith("{"):
                continue
            case = json.loads(line)
            if "topic" not in case or "encode" in case or case.get("heavy"):
                continue
            if not _subscribed(case["topic"]):
                continue    # the broker never hands it to the collector (or refuses it)
            if "payload_text" in case:
                out.append((case["topic"], _segments(case["payload_text"])))
            elif "payload_hex" in case:
                out.append((case["topic"], _segments(case["payload_hex"], True)))
    return out


VECTOR_MESSAGES = _vector_messages()

# ---- strategies --------------------------------------------------------------------------------

# Mosquitto drops a client that publishes a topic with control characters, surrogates or non-characters.
topic_device = st.one_of(st.sampled_from(HOSTILE_DEVS), st.text(
    st.characters(blacklist_categories=("Cs", "Cc", "Cn"), blacklist_characters="/+#"), min_size=1, max_size=40))


@st.composite
def any_topic(draw):
    return "fieldwatch/v1/%s/%s" % (draw(topic_device), draw(st.sampled_from(KIND_TOPICS)))


ext_int = st.one_of(st.sampled_from(EXTREME_INTS), st.integers(), st.integers(0, codec.MAX_U32))
ext_num = st.one_of(ext_int, st.floats(allow_nan=False, allow_infinity=False), st.sampled_from((1e308, -1e308, 5e-324)))
text = st.one_of(st.text(max_size=40), st.text(max_size=600), st.sampled_from(("\x00", "\ud800", "x\udfffy", "")))
json_any = st.recursive(st.none() | st.booleans() | ext_num | text,
                        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(text, inner, max_size=4),
                        max_leaves=15)
time_quality = st.sampled_from(codec.TIME_QUALITY + ("x",))


@st.composite
def structured(draw):
    # A message of a real kind with header and fields drawn from the extremes: valid or not.
    dev = draw(st.sampled_from(HOSTILE_DEVS))
    kind = draw(st.sampled_from(("readings", "log", "fix", "features", "result", "status", "wave")))
    boot, seq, tq = draw(st.integers(0, codec.MAX_U32)), draw(ext_int), draw(time_quality)
    t0 = draw(st.one_of(st.sampled_from(EXTREME_INTS), st.just(NOW()), st.integers(0, 2 ** 62)))
    if kind == "wave":
        tqi = codec.TIME_QUALITY.index(tq) if tq in codec.TIME_QUALITY else 7
        n, axes = draw(st.integers(1, 4)), draw(st.integers(1, 3))
        head = struct.pack(codec.WAVE_HEADER, codec.WAVE_MAGIC, 1, tqi, boot, seq % (codec.MAX_U32 + 1),
                           draw(st.integers(-2 ** 63, 2 ** 63 - 1) | st.sampled_from(EXTREME_INTS[:14])),
                           draw(st.sampled_from((100, 800000, 100000000, 99, 0))),
                           draw(st.sampled_from((0.0039, 1.5, 0.0))), n, axes, draw(st.sampled_from((0, 2, 3))),
                           len(dev))
        samples = draw(st.binary(min_size=2 * n * axes, max_size=2 * n * axes))
        return "fieldwatch/v1/%s/telemetry/wave" % dev, head + dev.encode() + samples
    msg = {"v": draw(st.sampled_from((1, 1, 1, 2, True, "1"))), "dev": dev, "boot": boot, "seq": seq, "t0": t0, "tq": tq}
    dt = st.one_of(st.integers(-codec.MAX_DT_MS - 1, codec.MAX_DT_MS + 1), st.just(0))
    if kind == "readings":
        msg["r"] = draw(st.lists(st.tuples(dt, st.sampled_from(("temp_c", "x", "Bad", "")), ext_num).map(list),
                                 max_size=4))
        topic = "telemetry/readings"
    elif kind == "log":
        msg["l"] = draw(st.lists(st.tuples(dt, st.sampled_from(codec.LOG_LEVELS + ("loud",)), text).map(list),
                                 max_size=3))
        topic = "log"
    elif kind == "fix":
        msg["f"] = draw(st.lists(st.fixed_dictionaries({"dt": dt, "mode": st.sampled_from((2, 3, 1)),
                                                        "lat_e7": ext_int, "lon_e7": ext_int},
                                                       optional={"alt_mm": ext_int, "sats": ext_int}), max_size=3))
        topic = "telemetry/fix"
    elif kind == "features":
        axis = st.fixed_dictionaries({k: ext_num for k in codec.FEATURE_KEYS})
        msg["w"] = draw(st.lists(st.fixed_dictionaries(
            {"dt": dt, "len_ms": ext_int, "rate_hz": ext_num, "n": ext_int},
            optional={"x": axis, "band_hz": st.lists(ext_num, max_size=4)}), max_size=2))
        topic = "telemetry/features"
    elif kind == "result":
        msg.update({"id": draw(text), "cmd": draw(st.sampled_from(codec.COMMANDS)), "ok": draw(st.booleans()),
                    "detail": draw(st.dictionaries(text, json_any, max_size=3)), "error": draw(text)})
        topic = "result"
    else:
        msg.update({"state": "online", "fw": draw(text), "hw": "esp32", "reset": "power_on",
                    "buf": {"depth": draw(ext_int), "oldest_s": draw(ext_num), "drops": draw(ext_int)},
                    "health": draw(st.dictionaries(st.sampled_from(("a", "b_1", "Bad")), ext_int, max_size=3))})
        topic = "status"
    return "fieldwatch/v1/%s/%s" % (dev, topic), json.dumps(msg).encode("utf-8", "surrogatepass")


@st.composite
def boundary(draw):
    # A message the contract accepts, every field at or near the edge of its range: it must be stored.
    dev = draw(st.sampled_from(HOSTILE_DEVS))
    kind = draw(st.sampled_from(("readings", "log", "fix", "features", "result", "status", "wave")))
    n = draw(st.integers(1, 3))
    boot = draw(st.sampled_from((0, 1, codec.MAX_U32)) | st.integers(0, codec.MAX_U32))
    seq = draw(st.sampled_from((0, codec.MAX_U32 - n + 1)) | st.integers(0, codec.MAX_U32 - n + 1))
    tq = draw(st.sampled_from(codec.TIME_QUALITY))
    now = NOW()
    dt = draw(st.sampled_from((0, -codec.MAX_DT_MS, codec.MAX_DT_MS)))
    if tq == "none":
        t0 = draw(st.sampled_from((codec.MAX_DT_MS, MAX_UNTIMED - codec.MAX_DT_MS, MAX_UNTIMED // 2)))
    else:   # wall clock: from 2020 to an hour short of a day ahead, dt keeping ts in range
        t0 = draw(st.sampled_from((codec.MIN_TS_MS + codec.MAX_DT_MS, now, now + codec.MAX_FUTURE_MS - codec.MAX_DT_MS
                                   - 3600000)))
    big = st.sampled_from((1e308, -1e308, 5e-324, 2 ** 53, -2 ** 53, 0, -0.0))
    pos = st.sampled_from((1e308, 5e-324, 2 ** 53, 0))
    texty = st.sampled_from(("", "\U0001f600" * 512, "é" * 512, "<script>x</script>", "'; DROP TABLE readings;--"))
    if kind == "readings":
        payload = codec.encode_readings(dev, boot, seq, t0, tq, [[dt, "a" * 32, draw(big)] for _ in range(n)])
    elif kind == "log":
        payload = codec.encode_logs(dev, boot, seq, t0, tq, [[dt, "critical", draw(texty)] for _ in range(n)])
    elif kind == "fix":
        f = {"dt": dt, "mode": 3}
        for name, lo, hi in codec.FIX_FIELDS:
            f[name] = draw(st.sampled_from((lo, hi)))
        payload = codec.encode_fixes(dev, boot, seq, t0, tq, [f] * n)
    elif kind == "features":
        axis = {k: draw(pos) for k in codec.FEATURE_KEYS}
        axis["bands"] = [draw(pos) for _ in range(32)]
        w = {"dt": dt, "len_ms": 3600000, "rate_hz": 100000, "n": 10000000,
             "band_hz": [i * 3000 for i in range(33)], "x": axis, "y": axis, "z": axis}
        payload = codec.encode_features(dev, boot, seq, t0, tq, [w] * n)
    elif kind == "result":
        detail = {"d": [[[[[{"x": 2 ** 53}]]]]], "s": draw(texty), "f": draw(big)}   # 8 levels: the most allowed
        payload = codec.encode_result(dev, boot, seq, t0, tq, "c" * 36, "capture", draw(st.booleans()), detail, "e" * 512)
    elif kind == "status":
        payload = codec.encode_status(dev, boot, seq, t0, tq, "sleeping", "f" * 32, "h" * 32, "panic",
                                      codec.MAX_U32, draw(pos), codec.MAX_U32, {"a" * 32: 2 ** 53})
    else:
        t0 = t0 + dt if t0 + dt >= 0 else t0
        m = draw(st.integers(1, 4))
        payload = codec.encode_wave(dev, boot, seq, t0, tq, 100000, 0.999, 16, 3, m, b"\xff\x7f" * 3 * m)
    return topics.topic(dev, kind), payload


@st.composite
def mutated_vector(draw):
    topic, payload = draw(st.sampled_from(VECTOR_MESSAGES))
    how = draw(st.sampled_from(("number", "number", "flip", "cut", "insert")))
    if how == "number" and not payload.startswith(b"FW"):
        spans = [m.span() for m in re.finditer(rb"-?\d+(\.\d+)?([eE][-+]?\d+)?", payload)]
        if spans:
            a, b = draw(st.sampled_from(spans))
            return topic, payload[:a] + draw(st.sampled_from(EXTREME_NUMBER_TEXT)).encode() + payload[b:]
    if not payload:
        return topic, draw(st.binary(max_size=20))
    i = draw(st.integers(0, len(payload) - 1))
    if how == "flip":
        return topic, payload[:i] + bytes([payload[i] ^ draw(st.integers(1, 255))]) + payload[i + 1:]
    if how == "cut":
        return topic, payload[:i]
    return topic, payload[:i] + draw(st.binary(min_size=1, max_size=8)) + payload[i:]


nested = st.one_of(st.integers(100, 30000).map(lambda n: b"[" * n + b"]" * n),
                   st.integers(100, 10000).map(lambda n: b'{"a":' * n + b"1" + b"}" * n),
                   st.integers(100, 70000).map(lambda n: b"[" * n))
hostile_message = st.one_of(
    st.tuples(any_topic(), st.binary(max_size=300)),
    st.tuples(any_topic(), json_any.map(lambda x: json.dumps(x).encode("utf-8", "surrogatepass"))),
    st.tuples(any_topic(), nested),
    st.tuples(any_topic(), st.just(b"x" * (codec.MAX_PAYLOAD + 1))),
    mutated_vector(),
    structured(),
    boundary(),
    boundary(),
)

# The three inputs of issue 14 that stopped or broke ingest, always among the examples.
ISSUE_14 = [
    ("fieldwatch/v1/fz-a/telemetry/readings", b"[" * 1000 + b"]" * 1000),
    ("fieldwatch/v1/fz-a/telemetry/readings", codec.encode_readings("fz-a", 1, 0, 230000000000000, "none",
                                                                    [[0, "x", 1]])),
    ("fieldwatch/v1/fz-b/telemetry/readings", b'{"v":1,"dev":"fz-b","boot":3,"seq":4294967295,"t0":1,"tq":"ntp",'
                                              b'"r":[[0,"x",1],[0,"x",2]]}'),
]


def _verdict(topic, payload):
    # What the contract says of a message: None (valid) or its WireError code; nothing else may come out.
    try:
        codec.decode(topic, payload, NOW())
    except codec.WireError as e:
        return e.code
    return None


def _digest(topic, payload):
    return hashlib.sha256(topic.encode("utf-8", "replace") + b"\0" + payload).digest()


@pytest.mark.timeout(240)
def test_collector_fuzz_hostile_messages_never_stop_valid_traffic(fresh_broker, fresh_db):
    c = CollectorProcess(fresh_broker.url, fresh_db).start()
    pub = ConfirmingPublisher(fresh_broker.url, "fuzz-%d" % random.randrange(1 << 30))
    pub.start()
    state = {"boot": 0, "keys": 0, "sent": []}
    try:
        @settings(max_examples=60, deadline=None, database=None, phases=(Phase.explicit, Phase.generate),
                  suppress_health_check=list(HealthCheck))
        @given(st.lists(hostile_message, min_size=10, max_size=50))
        @example(ISSUE_14)
        def publish_between_valid_readings(hostile):
            state["boot"] += 1
            boot, seq = state["boot"], 0
            for i, (topic, payload) in enumerate(hostile):
                pub.client.publish(topic, payload, qos=1)
                if i % 4 == 0:
                    n = 1 + i % 3
                    pub.send(VALID_DEV, "readings", boot, seq, seq + n - 1, reading_payload(VALID_DEV, boot, seq, NOW(), n))
                    seq += n
            pub.send(VALID_DEV, "readings", boot, seq, seq, reading_payload(VALID_DEV, boot, seq, NOW()))
            seq += 1
            state["keys"] += seq
            state["sent"].extend(hostile)
            assert pub.wait_confirmed(30), "valid readings stopped behind hostile ones"
            assert c.proc.poll() is None, "the collector died:\n" + c.output()[-3000:]

        publish_between_valid_readings()

        with psycopg.connect(fresh_db) as conn:
            rows, keys = conn.execute("SELECT count(*), count(DISTINCT (boot, seq)) FROM readings "
                                      "WHERE device_id = %s", (VALID_DEV,)).fetchone()
            quarantined = {bytes(d): (code, times) for d, code, times in
                           conn.execute("SELECT digest, code, times FROM quarantine").fetchall()}
            stored = set()
            for table, boot, seq in KEYED:
                stored.update(conn.execute("SELECT device_id, %s, %s FROM %s" % (boot, seq, table)).fetchall())
        assert (rows, keys) == (state["keys"], state["keys"]), "every valid reading stored exactly once"
        out = c.output()
        for bad in ("Traceback", "commit of", "refused", "decode_failed"):
            assert bad not in out, "%r in the collector's log:\n%s" % (bad, out[-3000:])
        copies, accepted = {}, 0
        for topic, payload in state["sent"]:
            code = _verdict(topic, payload)
            if code is None:
                d = codec.decode(topic, payload, NOW())
                # What the contract accepts is stored (a result only fills in its command's row once: ids repeat).
                if d["kind"] in codec.RECORD_KINDS and d["kind"] != "result":
                    accepted += 1
                    for r in d["records"]:
                        assert (d["dev"], d["boot"], r["seq"]) in stored, "valid %s on %s not stored" % (d, topic)
            else:
                d = _digest(topic, payload)
                copies[d] = (code, copies.get(d, (code, 0))[1] + 1)
        assert state["boot"] >= 50 and len(copies) >= 150 and accepted >= 100, (
            "too few examples ran: %d lists, %d distinct rejected and %d accepted messages"
            % (state["boot"], len(copies), accepted))
        print("fuzz: %d lists, %d hostile messages (%d accepted records messages), %d distinct rejected (%s)" % (
            state["boot"], len(state["sent"]), accepted, len(copies),
            ", ".join(sorted(set(c for c, _ in copies.values())))))
        for d, (code, n) in copies.items():
            assert quarantined.get(d) == (code, n), "quarantine row of a rejected message: %r, want %r" % (
                quarantined.get(d), (code, n))
        assert c.terminate() == 0
    finally:
        c.kill()
        pub.stop()
