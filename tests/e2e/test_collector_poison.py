"""No input can stop or crash ingest (issue 14): poison messages against a real collector, Mosquitto and PostgreSQL.

Each test sends a message that once stopped ingest for every device (or broke
the device's view of its acks) between valid ones, and checks that the bad one
is quarantined and acknowledged while the valid ones are stored and confirmed.
"""

import time

import psycopg

from fieldwatch.devservices.collector import CollectorProcess, count_keys
from fieldwatch.devservices.ports import free_port
from fieldwatch.tools.loadgen import reading_payload
from fieldwatch.wire import codec
from tests.e2e.web_fleet import get
from tests.harness.listener import DeviceListener

NOW = lambda: int(time.time() * 1000)  # noqa: E731


def _quarantine(db_url, timeout=20, want=1):
    # Rows of the quarantine table, once it holds at least `want` of them.
    deadline = time.monotonic() + timeout
    while True:
        with psycopg.connect(db_url) as conn:
            rows = conn.execute("SELECT code, reason, times, topic FROM quarantine ORDER BY id").fetchall()
        if len(rows) >= want or time.monotonic() > deadline:
            return rows
        time.sleep(0.1)


def _send_valid(publisher, dev, boot, seqs):
    for s in seqs:
        publisher.send(dev, "readings", boot, s, s, reading_payload(dev, boot, s, NOW()))


def test_collector_survives_deeply_nested_json_and_acknowledges_it(fresh_broker, fresh_db, publisher):
    # Issue 14: 1,000 nested '[' then ']' (2,000 bytes) on a record topic of a valid device id raised
    # RecursionError out of Batch.add (quarantine_keys); never acknowledged, it killed every restart too.
    c = CollectorProcess(fresh_broker.url, fresh_db).start()
    try:
        _send_valid(publisher, "pump-05", 1, range(0, 3))
        publisher.client.publish("fieldwatch/v1/pump-05/telemetry/readings", b"[" * 1000 + b"]" * 1000, qos=1)
        publisher.client.publish("fieldwatch/v1/pump-05/log", b"{\"a\":" * 1000 + b"1" + b"}" * 1000, qos=1)
        _send_valid(publisher, "pump-05", 1, range(3, 6))
        assert publisher.wait_confirmed(30), "valid traffic stopped behind a deeply nested message"
        assert c.proc.poll() is None, "the collector died:\n" + c.output()[-2000:]
        rows = _quarantine(fresh_db, want=2)
        assert sorted(r[0] for r in rows) == ["bad_json", "bad_json"]
        assert c.terminate() == 0
        c.start()                                            # nothing left unacknowledged to kill it again
        _send_valid(publisher, "pump-05", 1, range(6, 8))
        assert publisher.wait_confirmed(30)
        assert c.proc.poll() is None
        assert [r[2] for r in _quarantine(fresh_db)] == [1, 1], "acknowledged once: not redelivered"
        assert count_keys(fresh_db) == (8, 8)
    finally:
        c.terminate()


def test_collector_quarantines_untimed_record_beyond_what_the_database_can_place(fresh_broker, fresh_db, publisher):
    # Issue 14: tq=none with t0 above ~2.2e14 ms passed the contract (0..2^62) but the commit failed
    # ("interval/timestamp out of range") and was retried forever: nothing else was ever stored.
    c = CollectorProcess(fresh_broker.url, fresh_db).start()
    try:
        _send_valid(publisher, "pump-06", 1, range(0, 3))
        for seq, t0 in ((100, 230000000000000), (101, 2 ** 62)):
            bad = codec.encode_readings("pump-06", 2, seq, t0, "none", [[0, "temp_c", 1.0]])
            publisher.send("pump-06", "readings", 2, seq, seq, bad)  # its key is confirmed too: not resent forever
        bad_wave = codec.encode_wave("pump-06", 2, 102, 2 ** 50, "none", 800, 0.0039, 2, 1, 1, b"\x00\x00")
        publisher.send("pump-06", "wave", 2, 102, 102, bad_wave)
        _send_valid(publisher, "pump-06", 1, range(3, 6))
        assert publisher.wait_confirmed(30), "valid traffic stopped behind a record the database cannot place"
        assert count_keys(fresh_db) == (6, 6)
        rows = _quarantine(fresh_db, want=3)
        assert [r[0] for r in rows] == ["out_of_range"] * 3, rows
        assert all("tq none" in r[1] for r in rows), rows
        assert "commit of" not in c.output(), "no commit may fail on a message that passed validation"
    finally:
        c.terminate()


def test_collector_stores_a_batch_except_the_messages_the_database_refuses(fresh_broker, fresh_db, publisher):
    # A message the database refuses (here: a CHECK constraint and a narrowed column an operator added;
    # IntegrityError and DataError) is quarantined as store_rejected with the database's reason, and the
    # rest of its batch commits: found by splitting the batch, not by retrying it forever.
    c = CollectorProcess(fresh_broker.url, fresh_db, batch_age_ms=1500).start()
    try:
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            conn.execute("ALTER TABLE readings ADD CONSTRAINT readings_value_sane CHECK (value < 1e300)")
            conn.execute("ALTER TABLE device_logs ALTER COLUMN text TYPE varchar(20)")
        now = NOW()
        for s in range(40):
            value = 1e301 if s in (7, 31) else 1.0
            publisher.send("pump-07", "readings", 1, s, s, codec.encode_readings("pump-07", 1, s, now, "ntp",
                                                                                  [[0, "temp_c", value]]))
        publisher.send("pump-07", "log", 1, 40, 41, codec.encode_logs("pump-07", 1, 40, now, "ntp",
                                                                        [[0, "info", "short"], [1, "info", "x" * 30]]))
        publisher.send("pump-07", "log", 1, 42, 42, codec.encode_logs("pump-07", 1, 42, now, "ntp",
                                                                        [[0, "info", "fits"]]))
        assert publisher.wait_confirmed(30), "the batch was retried instead of split"
        assert count_keys(fresh_db) == (38, 38)
        assert count_keys(fresh_db, "device_logs") == (1, 1)
        rows = _quarantine(fresh_db, want=3)
        assert [r[0] for r in rows] == ["store_rejected"] * 3, rows
        reasons = [r[1] for r in rows]
        assert sum("readings_value_sane" in r for r in reasons) == 2, reasons
        assert sum("too long" in r for r in reasons) == 1, reasons
        assert c.proc.poll() is None
        out = c.output()
        assert "store_rejected" in out
    finally:
        c.terminate()


def test_collector_readyz_is_not_ready_while_commits_fail(fresh_broker, fresh_db, publisher):
    # Issue 14: /readyz said ready while every commit failed. Make the commits fail while the database and
    # the broker answer (the readings table renamed away), then put it back.
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    c = CollectorProcess(fresh_broker.url, fresh_db, web_listen="127.0.0.1:%d" % port).start()
    try:
        _send_valid(publisher, "pump-08", 1, [0])
        assert publisher.wait_confirmed(20)
        assert get(url + "/readyz")[0] == 200
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            conn.execute("ALTER TABLE readings RENAME TO readings_away")
        _send_valid(publisher, "pump-08", 1, [1])
        deadline = time.monotonic() + 20
        while True:
            status, body = get(url + "/readyz")
            if status == 503 or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert status == 503, body
        assert body["database"] == "ok" and body["broker"] == "ok"
        assert body["ingest"].startswith("commits failing") and "readings" in body["ingest"], body
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            conn.execute("ALTER TABLE readings_away RENAME TO readings")
        assert publisher.wait_confirmed(30), "the commit is retried until the table is back"
        deadline = time.monotonic() + 20
        while get(url + "/readyz")[0] != 200:
            assert time.monotonic() < deadline, get(url + "/readyz")
            time.sleep(0.2)
        assert get(url + "/readyz")[1]["ingest"] == "ok"
        assert count_keys(fresh_db) == (2, 2)
    finally:
        c.terminate()


def test_collector_acks_only_ranges_a_device_accepts(fresh_broker, fresh_db, publisher):
    # Issue 14: a rejected message at seq 2^32-1 holding 3 records was confirmed as [boot, 2^32-1, 2^32+1];
    # devices reject that ack (out_of_range) and with it every key it covers, so their valid records
    # were never confirmed.
    listener = DeviceListener(fresh_broker.url, "pump-09")
    c = CollectorProcess(fresh_broker.url, fresh_db, batch_age_ms=1500).start()
    try:
        seq = codec.MAX_U32
        bad = b'{"v":1,"dev":"pump-09","boot":3,"seq":%d,"t0":%d,"tq":"ntp","r":[[0,"x",1],[0,"x",2],[0,"x",3]]}' % (
            seq, NOW())
        publisher.client.publish("fieldwatch/v1/pump-09/telemetry/readings", bad, qos=1)
        _send_valid(publisher, "pump-09", 3, [0, 1])
        assert publisher.wait_confirmed(15, resend_after_s=60), "the valid records' ack was one a device rejects"
        deadline = time.monotonic() + 10
        while True:
            acks = listener.decoded("ack")       # raises WireError if any ack breaks the contract
            if any(codec.covers(a["ranges"], 3, seq) for a in acks) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert any(codec.covers(a["ranges"], 3, seq) for a in acks), "the bad message's one valid key is confirmed"
        assert _quarantine(fresh_db)[0][0] == "out_of_range"
    finally:
        c.terminate()
        listener.close()


def test_collector_quarantine_counts_every_copy_even_within_one_batch(fresh_broker, fresh_db, publisher):
    # Issue 14: three copies of the same bad bytes in one batch were counted as one arrival.
    c = CollectorProcess(fresh_broker.url, fresh_db, batch_age_ms=1500).start()
    try:
        bad = b'{"v":1,"dev":"pump-10","boot":1,"seq":0,"t0":0,"tq":"ntp","r":[]}'
        for _ in range(3):
            publisher.client.publish("fieldwatch/v1/pump-10/telemetry/readings", bad, qos=1)
        _send_valid(publisher, "pump-10", 1, [1])
        assert publisher.wait_confirmed(20)
        assert [r[2] for r in _quarantine(fresh_db)] == [3]
        publisher.client.publish("fieldwatch/v1/pump-10/telemetry/readings", bad, qos=1)
        _send_valid(publisher, "pump-10", 1, [2])
        assert publisher.wait_confirmed(20)
        deadline = time.monotonic() + 10
        while _quarantine(fresh_db)[0][2] != 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [r[2] for r in _quarantine(fresh_db)] == [4], "a later copy adds one"
    finally:
        c.terminate()
