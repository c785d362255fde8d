"""The collector against a real Mosquitto and a real PostgreSQL: exactly once, quarantine, dedupe."""

import json
import random
import subprocess
import sys
import time

import psycopg

from fieldwatch.devservices.collector import CollectorProcess, count_keys, wait_rows
from fieldwatch.tools.loadgen import reading_payload
from fieldwatch.wire import codec

NOW = lambda: int(time.time() * 1000)  # noqa: E731


def test_collector_redelivery_replay_late_and_out_of_order_stored_once(fresh_broker, fresh_db, publisher):
    c = CollectorProcess(fresh_broker.url, fresh_db).start()
    try:
        boot, now = 4, NOW()
        seqs = list(range(300))
        random.Random(1).shuffle(seqs)                       # out of order
        for s in seqs:
            t0 = now - 3 * 86400_000 if s < 50 else now     # 50 records three days late
            publisher.send("pump-01", "readings", boot, s, s, reading_payload("pump-01", boot, s, t0))
        for s in range(0, 300, 3):                           # a device replaying a third of them
            publisher.send("pump-01", "readings", boot, s, s, reading_payload("pump-01", boot, s, now - 3 * 86400_000 if s < 50 else now))
        assert publisher.wait_confirmed(30), "not every message was confirmed"
        rows, keys = count_keys(fresh_db)
        assert (rows, keys) == (300, 300)
        with psycopg.connect(fresh_db) as conn:
            late = conn.execute("SELECT count(*) FROM readings WHERE ts < now() - interval '2 days'").fetchone()[0]
            skew = conn.execute("SELECT count(*) FROM readings WHERE recv_ts - ts > interval '2 days'").fetchone()[0]
        assert late == 50 and skew == 50, "late data is kept with its own device time and receive time"
    finally:
        c.terminate()


def test_collector_exactly_once_under_kills_broker_restart_and_database_outage(fresh_broker, fresh_db, pg_cluster,
                                                                               publisher):
    total = 20000
    c = CollectorProcess(fresh_broker.url, fresh_db, batch_max=500).start()
    rng = random.Random(7)
    devs = ["dev-%02d" % i for i in range(10)]
    kill_at = sorted(rng.sample(range(2000, 18000), 4))
    try:
        for i in range(total):
            dev = devs[i % len(devs)]
            seq = i // len(devs)
            publisher.send(dev, "readings", 1, seq, seq, reading_payload(dev, 1, seq, NOW()))
            if kill_at and i == kill_at[0]:
                kill_at.pop(0)
                c.kill()                                   # anywhere in receive / commit / ack
                time.sleep(rng.uniform(0.0, 0.5))
                c.start()
            if i == 10000:
                fresh_broker.restart()                     # persistent sessions and queued messages survive
            if i == 14000:
                pg_cluster.stop()                          # database away: nothing may be acknowledged
            if i == 15000:
                time.sleep(2.0)
                assert c.proc.poll() is None, "the collector must survive a database outage"
                pg_cluster.start()
        assert publisher.wait_confirmed(120), "%d messages never confirmed" % len(publisher.pending)
        rows, keys = count_keys(fresh_db)
        assert keys == total, "lost %d readings" % (total - keys)
        assert rows == total, "%d readings stored twice" % (rows - total)
        out = c.output()
        assert "commit of" in out and "failed" in out, "the database outage should have been seen and retried"
    finally:
        c.kill()


def test_collector_sigterm_flushes_commits_and_exits_cleanly(fresh_broker, fresh_db, publisher):
    c = CollectorProcess(fresh_broker.url, fresh_db, batch_age_ms=5000, batch_max=100000).start()
    for s in range(500):
        publisher.send("pump-02", "readings", 9, s, s, reading_payload("pump-02", 9, s, NOW()))
    time.sleep(1.0)  # within the 5 s batch age: nothing committed yet
    assert c.terminate(30) == 0
    assert count_keys(fresh_db) == (500, 500), "SIGTERM must flush and commit the open batch"
    c2 = CollectorProcess(fresh_broker.url, fresh_db).start()
    try:
        assert publisher.wait_confirmed(30)
        assert count_keys(fresh_db) == (500, 500)
    finally:
        c2.terminate()


BAD = [
    ("bad_json", "readings", b"{not json"),
    ("bad_json", "readings", b"\xff\xfe\x00garbage"),
    ("bad_type", "readings", b'{"v":1,"dev":"pump-03","boot":1,"seq":900,"t0":%d,"tq":"ntp","r":[[0,"temp_c","hot"]]}'),
    ("bad_json", "readings", b'{"v":1,"dev":"pump-03","boot":1,"seq":901,"t0":%d,"tq":"ntp","r":[[0,"temp_c",NaN]]}'),
    ("not_finite", "readings", b'{"v":1,"dev":"pump-03","boot":1,"seq":902,"t0":%d,"tq":"ntp","r":[[0,"temp_c",1e400]]}'),
    ("oversize", "readings", b"[" + b"1," * 40000 + b"1]"),
    ("bad_version", "readings", b'{"v":2,"dev":"pump-03","boot":1,"seq":903,"t0":%d,"tq":"ntp","r":[[0,"temp_c",1]]}'),
    ("device_mismatch", "readings", b'{"v":1,"dev":"pump-99","boot":1,"seq":904,"t0":%d,"tq":"ntp","r":[[0,"temp_c",1]]}'),
    ("absurd_time", "readings", b'{"v":1,"dev":"pump-03","boot":1,"seq":905,"t0":1262304000000,"tq":"ntp","r":[[0,"temp_c",1]]}'),
    ("absurd_time", "readings", b'{"v":1,"dev":"pump-03","boot":1,"seq":906,"t0":4102444800000,"tq":"ntp","r":[[0,"temp_c",1]]}'),
    ("bad_name", "readings", b'{"v":1,"dev":"pump-03","boot":1,"seq":907,"t0":%d,"tq":"ntp","r":[[0,"x\'; DROP TABLE readings;--",1]]}'),
    ("bad_wave", "wave", codec.encode_wave("pump-03", 1, 908, 1763880000000, "ntp", 800, 0.0039, 2, 3, 2, b"\x00" * 12)[:-1]),
]


def test_collector_quarantines_every_class_of_bad_input_while_valid_data_flows(fresh_broker, fresh_db, publisher):
    c = CollectorProcess(fresh_broker.url, fresh_db).start()
    try:
        raw = publisher.client
        expected = []
        s = 0
        for code, kind, payload in BAD:
            if b"%d" in payload:
                payload = payload % NOW()
            raw.publish("fieldwatch/v1/pump-03/" + ("telemetry/" + kind), payload, qos=1)
            expected.append(code)
            publisher.send("pump-03", "readings", 1, s, s, reading_payload("pump-03", 1, s, NOW()))
            s += 1
        # Identifiers carrying markup or SQL, in the topic itself.
        for dev in ("<script>alert(1)<", "x'; DROP TABLE devices;--", "UPPER"):
            raw.publish("fieldwatch/v1/%s/telemetry/readings" % dev, b'{"v":1}', qos=1)
            expected.append("bad_device_id")
        # A topic with more levels matches no subscription: the broker never delivers it to us.
        raw.publish("fieldwatch/v1/pump-03/cmd", b"{}", qos=1)  # not subscribed: the collector never sees it
        assert publisher.wait_confirmed(30)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with psycopg.connect(fresh_db) as conn:
                got = conn.execute("SELECT code, reason, topic, payload FROM quarantine ORDER BY id").fetchall()
            if len(got) >= len(expected):
                break
            time.sleep(0.2)
        assert sorted(g[0] for g in got) == sorted(expected), [(g[0], g[2]) for g in got]
        for code, reason, topic, payload in got:
            assert reason and len(reason) > 10, "every quarantine row says precisely why"
            assert payload is not None
        assert count_keys(fresh_db) == (len(BAD), len(BAD)), "valid traffic kept flowing"
        with psycopg.connect(fresh_db) as conn:
            assert conn.execute("SELECT count(*) FROM devices").fetchone()[0] == 1  # only pump-03 is a device
    finally:
        c.terminate()


def test_collector_quarantined_records_are_confirmed_so_devices_stop_resending(fresh_broker, fresh_db, publisher):
    c = CollectorProcess(fresh_broker.url, fresh_db).start()
    try:
        bad = b'{"v":1,"dev":"pump-04","boot":2,"seq":0,"t0":%d,"tq":"ntp","r":[[0,"temp_c",1e999],[1,"temp_c",2]]}' % NOW()
        publisher.send("pump-04", "readings", 2, 0, 1, bad)
        assert publisher.wait_confirmed(20), "a quarantined record must still be confirmed, or it is resent forever"
    finally:
        c.terminate()


def test_collector_two_collectors_share_one_subscription_exactly_once(fresh_broker, fresh_db, publisher):
    a = CollectorProcess(fresh_broker.url, fresh_db, client_id="coll-a", share_group="g1").start()
    b = CollectorProcess(fresh_broker.url, fresh_db, client_id="coll-b", share_group="g1").start()
    try:
        total = 6000
        for i in range(total):
            dev = "dev-%02d" % (i % 6)
            publisher.send(dev, "readings", 3, i // 6, i // 6, reading_payload(dev, 3, i // 6, NOW()))
            if i == 3000:
                b.kill()
            if i == 4500:
                b.start()
        assert publisher.wait_confirmed(60)
        assert count_keys(fresh_db) == (total, total)
        assert "connected to" in a.output() and "connected to" in b.output()
        with psycopg.connect(fresh_db) as conn:
            assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == total
    finally:
        a.terminate()
        b.kill()


def test_collector_stores_every_record_kind_and_expands_waveforms(fresh_broker, fresh_db, publisher):
    c = CollectorProcess(fresh_broker.url, fresh_db).start()
    try:
        now = NOW()
        dev = "rig-1"
        publisher.client.publish("fieldwatch/v1/rig-1/status", codec.encode_status(
            dev, 5, 0, now, "ntp", "online", "0.1.0", "pi", "power_on", 12, 3.5, 1, {"fifo_overruns": 2}), qos=1)
        publisher.send(dev, "fix", 5, 0, 0, codec.encode_fixes(dev, 5, 0, now, "gps", [
            {"dt": 0, "mode": 3, "lat_e7": -377847883, "lon_e7": 1753148967, "alt_mm": 59900, "speed_mmps": 355,
             "track_cdeg": 18139, "eph_mm": 20900, "epv_mm": 34500, "sats": 8}]))
        win = {"dt": 0, "len_ms": 1000, "rate_hz": 800, "n": 800, "band_hz": [0, 100, 400],
               "x": {"rms": 0.07, "peak": 0.28, "crest": 4.0, "dom_hz": 360.0, "bands": [0.001, 0.004]}}
        publisher.send(dev, "features", 5, 1, 1, codec.encode_features(dev, 5, 1, now, "ntp", [win]))
        samples = b"".join(int(v).to_bytes(2, "little", signed=True) for v in (1, -1, 256, -32768, 32767, 0))
        publisher.send(dev, "wave", 5, 2, 2, codec.encode_wave(dev, 5, 2, now, "ntp", 800, 0.0039, 2, 3, 2, samples))
        publisher.send(dev, "log", 5, 3, 4, codec.encode_logs(dev, 5, 3, now, "ntp", [[0, "info", "boot ok"],
                                                                                    [5, "warning", "<b>hot</b>"]]))
        publisher.send(dev, "result", 5, 5, 5, codec.encode_result(dev, 5, 5, now, "ntp", "c-1", "flush", True, {}))
        assert publisher.wait_confirmed(20)
        with psycopg.connect(fresh_db) as conn:
            q = lambda sql: conn.execute(sql).fetchall()  # noqa: E731
            assert q("SELECT lat, lon, alt_m, speed_mps, track_deg, sats FROM fixes") == [
                (-37.7847883, 175.3148967, 59.9, 0.355, 181.39, 8)]
            assert q("SELECT x_rms, x_dom_hz, y_rms, band_hz, x_bands FROM feature_windows") == [
                (0.07, 360.0, None, [0.0, 100.0, 400.0], [0.001, 0.004])]
            wave = q("SELECT sample_index, x_g, y_g, z_g FROM waveform_samples ORDER BY sample_index")
            assert [(i, round(x / 0.0039), round(y / 0.0039), round(z / 0.0039)) for i, x, y, z in wave] == [
                (0, 1, -1, 256), (1, -32768, 32767, 0)]
            assert q("SELECT level, text FROM device_logs ORDER BY seq") == [("info", "boot ok"), ("warning", "<b>hot</b>")]
            assert q("SELECT id, device_id, ok FROM commands") == [("c-1", "rig-1", True)]
            row = q("SELECT state, hw, fw, boot, buf_depth, buf_drops, health FROM devices")[0]
            assert row == ("online", "pi", "0.1.0", 5, 12, 1, {"fifo_overruns": 2})
    finally:
        c.terminate()


def test_collector_migrations_are_idempotent_on_an_existing_database(fresh_db):
    run = lambda: subprocess.run([sys.executable, "-m", "collector.cli", "migrate"], capture_output=True, text=True,  # noqa: E731
                                 env={"DATABASE_URL": fresh_db, "PATH": "/usr/bin:/bin"}, timeout=60)
    first = run()
    assert first.returncode == 0, first.stderr
    assert "0001_core: applied" in first.stderr
    with psycopg.connect(fresh_db) as conn:
        conn.execute("INSERT INTO readings (device_id, boot, seq, ts, recv_ts, tq, name, value) "
                     "VALUES ('a', 1, 1, now(), now(), 'ntp', 'x', 1)")
    second = run()
    assert second.returncode == 0, second.stderr
    assert "applied" not in second.stderr
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT count(*) FROM readings").fetchone()[0] == 1
        versions = conn.execute("SELECT version, status FROM schema_migrations ORDER BY version").fetchall()
    assert versions == [(1, "applied"), (2, "skipped")]


def test_collector_reports_config_errors_without_traceback(tmp_path):
    bad = tmp_path / "c.toml"
    bad.write_text('[ingest]\nbatch_max = "lots"\n')
    r = subprocess.run([sys.executable, "-m", "collector.cli", "-c", str(bad), "config"], capture_output=True, text=True)
    assert r.returncode == 2
    assert "ingest.batch_max must be a whole number" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "collector.cli", "config"], capture_output=True, text=True,
                       env={"MQTT_URL": "http://nope", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2 and "mqtt.url" in r.stderr and "MQTT_URL" in r.stderr
