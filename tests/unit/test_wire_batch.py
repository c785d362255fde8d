"""fieldwatch.wire.batch: batched messages from records already encoded, as the Pi's outbox
builds them, and the outbox's payloads against the golden vectors (issue 11, "Wire")."""

import json
import os
import random

import pytest

from edge_agent.keys import BOOT_FILE, KeySource
from edge_agent.outbox import Outbox
from fieldwatch.wire import batch, codec
from fieldwatch.devservices.micropython import REPO_ROOT

VECTORS = REPO_ROOT / "tests" / "vectors" / "wire_v1.json"
BATCH_VECTORS = [c for c in json.loads(VECTORS.read_text(encoding="utf-8"))
                 if c.get("encode", {}).get("fn") == "encode_batch"]
ENCODER = {"readings": codec.encode_readings, "fix": codec.encode_fixes,
           "features": codec.encode_features, "log": codec.encode_logs}
DEV = "pump-07"
T0 = 1751327990000


def _body(kind, item):
    # A record's body (what Outbox.append takes) from its item in a message.
    if isinstance(item, list):
        return item[1:]
    body = dict(item)
    del body["dt"]
    return body


def _records(kind, rng, n):
    # n random records of `kind` as (dt_ms, body), dt rising from 0.
    out, dt = [], 0
    for i in range(n):
        if kind == "readings":
            body = [rng.choice(["temp_c", "rssi_dbm", "vbat_v"]), rng.choice([rng.uniform(-100, 100), rng.randint(-99, 99)])]
        elif kind == "log":
            body = [rng.choice(codec.LOG_LEVELS), rng.choice(["started", "Grüße ✓", 'a "quoted" \\ line', ""])]
        elif kind == "fix":
            body = {"mode": rng.choice([2, 3]), "lat_e7": rng.randint(-900000000, 900000000),
                    "lon_e7": rng.randint(-1800000000, 1800000000)}
            if rng.random() < 0.5:
                body["sats"] = rng.randint(0, 255)
        else:
            body = {"len_ms": 1000, "rate_hz": 800, "n": 800,
                    "x": {"rms": rng.random(), "peak": rng.random(), "crest": 3.0, "dom_hz": 29.6}}
        out.append((dt, body))
        dt += rng.randint(0, 5000)
    return out


@pytest.mark.parametrize("kind", ["readings", "fix", "features", "log"])
def test_encode_batch_is_byte_for_byte_the_kinds_encoder(kind):
    rng = random.Random(kind)
    for n in (1, 2, 7, 50):
        recs = _records(kind, rng, n)
        texts = [json.dumps(body, separators=(",", ":"), allow_nan=False) for _, body in recs]
        items = ",".join(batch.record_item(dt, t) for (dt, _), t in zip(recs, texts))
        got = batch.encode_batch(DEV, kind, 12, 100, T0, "ntp", items)
        full = [[dt] + body if isinstance(body, list) else dict({"dt": dt}, **body) for dt, body in recs]
        assert got == ENCODER[kind](DEV, 12, 100, T0, "ntp", full)
        # ... and what the outbox wrote before the wire package did it: the kind's
        # encoder with an empty record list, its closing ']}' cut off, the items spliced in
        assert got == ENCODER[kind](DEV, 12, 100, T0, "ntp", [])[:-2] + items.encode() + b"]}"
        assert batch.record_bodies(kind, T0, got) == [(T0 + dt, t) for (dt, _), t in zip(recs, texts)]


def test_record_item_of_an_empty_object():
    assert batch.record_item(5, "{}") == '{"dt":5}'
    assert batch.record_bodies("features", 10, b'{"w":[{"dt":5}]}') == [(15, "{}")]


def test_every_batched_kind_has_an_outbox_vector():
    assert sorted(c["encode"]["args"][1] for c in BATCH_VECTORS) == sorted(codec.LIST_KEY)


def _open_box(state, case):
    # An outbox whose next keys are the vector's (boot, seq).
    _, _, boot, seq, _, _, _ = case["encode"]["args"]
    os.makedirs(state)
    with open(os.path.join(state, BOOT_FILE), "w") as f:
        f.write("%d\n" % (boot - 1))
    keys = KeySource(state)
    assert keys.boot == boot
    if seq:
        keys.take(seq)
    return Outbox(os.path.join(state, "outbox.db"), keys, DEV, clock=lambda: 1751327990.0)


def _vector_records(case):
    dev, kind, boot, seq, t0, tq, items = case["encode"]["args"]
    return kind, [(t0 + it["dt"] if isinstance(it, dict) else t0 + it[0], tq, _body(kind, it))
                  for it in json.loads("[" + items + "]")]


@pytest.mark.parametrize("case", BATCH_VECTORS, ids=[c["name"] for c in BATCH_VECTORS])
@pytest.mark.parametrize("how", ["one_append", "appended", "renamed_device"])
def test_outbox_payload_is_the_golden_vector(tmp_path, case, how):
    kind, records = _vector_records(case)
    box = _open_box(str(tmp_path / "state"), case)
    try:
        if how == "appended":
            for r in records:          # one record per call: each continues the open segment
                box.append(kind, [r])
        else:
            box.append(kind, records)
        b = box.next_to_send()
        box.mark_sent(b)
        assert b.n == len(records) and box.next_to_send() is None   # one segment, one message
        want = case["payload_text"].encode()
        if how == "renamed_device":
            # stored for another device id: the message is rebuilt from its records
            renamed = want.replace(b'"dev":"pump-07"', b'"dev":"pump-08"')
            assert b.payload("pump-08") == renamed
        else:
            assert b.payload(DEV) == want
    finally:
        box.close()
