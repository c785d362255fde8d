"""collector.batch: any message joins a batch whole or is quarantined; never raises (issue 14)."""

import time

from psycopg import errors

from collector.batch import Batch, quarantine_keys
from collector.mqtt import Message
from collector.store import refused
from fieldwatch.tools.loadgen import reading_payload
from fieldwatch.wire import codec

NOW = int(time.time() * 1000)
TOPIC = "fieldwatch/v1/pump-01/telemetry/readings"


def msg(payload, topic=TOPIC, mid=1):
    return Message(topic, payload, mid, 1, False, NOW, 1)


def test_batch_deeply_nested_json_is_quarantined_not_raised():
    b = Batch()
    cases = ((b"[" * 1000 + b"]" * 1000, "bad_json"), (b"[" * 100000, "oversize"),   # still parsed for its keys
             (b'{"a":' * 5000 + b"1" + b"}" * 5000, "bad_json"))
    for i, (payload, code) in enumerate(cases):
        assert b.add(msg(payload, mid=i)) == code
    assert b.invalid == 3 and len(b.quarantine) == 3
    assert b.keys == {}, "no keys can be read, so none are confirmed"
    assert quarantine_keys(TOPIC, b"[" * 1000 + b"]" * 1000) is None


def test_batch_quarantine_keys_never_pass_2_32_minus_1():
    top = codec.MAX_U32
    bad = b'{"v":1,"dev":"pump-01","boot":3,"seq":%d,"t0":%d,"tq":"ntp","r":[[0,"x",1],[0,"x",2],[0,"x",3]]}'
    assert quarantine_keys(TOPIC, bad % (top, NOW)) == ("pump-01", 3, top, 1)
    assert quarantine_keys(TOPIC, bad % (top - 1, NOW)) == ("pump-01", 3, top - 1, 2)
    assert quarantine_keys(TOPIC, bad % (top - 2, NOW)) == ("pump-01", 3, top - 2, 3)
    b = Batch()
    assert b.add(msg(bad % (top, NOW))) == "out_of_range"
    (dev, ranges), = b.confirmations()
    ack = codec.encode_ack(dev, ranges)
    assert codec.decode("fieldwatch/v1/pump-01/ack", ack)["ranges"] == [(3, top, top)], "an ack devices accept"


def test_batch_counts_every_copy_of_a_quarantined_message():
    b = Batch()
    bad = b'{"v":1,"dev":"pump-01","boot":1,"seq":0,"t0":0,"tq":"ntp","r":[]}'
    for i in range(3):
        b.add(Message(TOPIC, bad, i, 1, False, NOW + i, 1))
    b.add(msg(b"other"))
    assert len(b.quarantine) == 2
    assert sorted(c[0] for c in b.copies.values()) == [1, 3]
    assert [c[1] for c in b.copies.values() if c[0] == 3] == [NOW + 2], "last arrival of the copies"


def test_batch_untimed_time_past_2_47_ms_is_quarantined_before_the_database_sees_it():
    b = Batch()
    ok = codec.encode_readings("pump-01", 1, 0, 2 ** 47, "none", [[0, "x", 1]])
    bad = codec.encode_readings("pump-01", 1, 1, 230000000000000, "none", [[0, "x", 1]])
    assert b.add(msg(ok)) is None
    assert b.add(msg(bad)) == "out_of_range"
    assert b.keys == {"pump-01": {(1, 0), (1, 1)}}


def test_batch_halves_rebuild_the_same_rows_keys_and_quarantine():
    b = Batch()
    msgs = [msg(reading_payload("pump-01", 1, s, NOW), mid=s) for s in range(7)] + [msg(b"{", mid=99)]
    for m in msgs:
        b.add(m)
    first, second = b.halves()
    assert [len(first), len(second)] == [4, 4]
    assert first.messages + second.messages == b.messages
    rows = lambda x: [r for t in x.rows.values() for r in t]  # noqa: E731
    assert rows(first) + rows(second) == rows(b)
    assert first.keys["pump-01"] | second.keys["pump-01"] == b.keys["pump-01"]
    assert (first.records + second.records, first.invalid + second.invalid) == (7, 1)


def test_batch_refused_message_is_quarantined_with_its_keys():
    m = msg(reading_payload("pump-01", 4, 10, NOW, n=3))
    b = Batch.refused(m, "the database refused it: value out of range")
    assert b.refused_only and b.messages == [m] and not any(b.rows.values())
    (entry,) = b.quarantine.values()
    assert (entry.code, entry.device_id, entry.payload) == ("store_rejected", "pump-01", m.payload)
    assert b.keys == {"pump-01": {(4, 10), (4, 11), (4, 12)}}, "its keys are confirmed like any quarantined record"


def test_store_refused_tells_content_errors_from_ones_a_retry_fixes():
    for e in (errors.DatetimeFieldOverflow(), errors.NumericValueOutOfRange(), errors.InvalidTextRepresentation(),
              errors.StringDataRightTruncation(), errors.CheckViolation(), errors.NotNullViolation(),
              errors.ProgramLimitExceeded(), OverflowError("int too big"), TypeError("cannot dump")):
        assert refused(e), e
    for e in (errors.OperationalError(), errors.DeadlockDetected(), errors.SerializationFailure(),
              errors.UndefinedTable(), errors.InsufficientPrivilege(), errors.AdminShutdown(), errors.DiskFull()):
        assert not refused(e), e
