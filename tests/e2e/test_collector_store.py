"""collector.store against a real PostgreSQL: device registry outside the data transaction's locks."""

import threading
import time

import psycopg

from collector.batch import Batch
from collector.migrate import migrate
from collector.mqtt import Message
from collector.store import Store
from fieldwatch.tools.loadgen import reading_payload

NOW = lambda: int(time.time() * 1000)  # noqa: E731


def batch_of(dev, seqs, t0_ms, recv_ms):
    b = Batch()
    for s in seqs:
        b.add(Message("fieldwatch/v1/%s/telemetry/readings" % dev, reading_payload(dev, 1, s, t0_ms), s + 1, 1,
                      False, recv_ms, 1))
    return b


def test_store_registers_devices_and_keeps_last_seen_and_skew_current(fresh_db):
    migrate(fresh_db, log_progress=lambda m: None)
    st = Store(fresh_db)
    try:
        t = NOW()
        assert st.write(batch_of("pump-01", range(3), t - 1500, t)) == {"readings": 3}
        assert st.write(batch_of("pump-01", range(3, 5), t + 2000, t + 5000)) == {"readings": 2}
        assert st.write(batch_of("pump-01", range(3, 5), t + 2000, t + 4000)) == {"readings": 0}  # redelivery
        with psycopg.connect(fresh_db) as conn:
            first, last, skew = conn.execute(
                "SELECT extract(epoch FROM first_seen) * 1000, extract(epoch FROM last_seen) * 1000, clock_skew_ms"
                " FROM devices WHERE device_id = 'pump-01'").fetchone()
        assert (round(first), round(last)) == (t, t + 5000), "last_seen only moves forward"
        assert skew == 2000, "clock skew of the latest batch (receipt - device time)"
    finally:
        st.close()


def test_store_data_commit_does_not_wait_for_a_locked_device_row(fresh_db):
    migrate(fresh_db, log_progress=lambda m: None)
    st = Store(fresh_db)
    t = NOW()
    st.write(batch_of("pump-02", [0], t, t))            # the device exists and is known
    holder = psycopg.connect(fresh_db)
    try:
        # Another collector's transaction holds the device row (as a status update would).
        holder.execute("SELECT 1 FROM devices WHERE device_id = 'pump-02' FOR UPDATE")
        done = threading.Event()
        th = threading.Thread(target=lambda: (st.write(batch_of("pump-02", range(1, 101), t, t + 10)), done.set()))
        th.start()
        with psycopg.connect(fresh_db, autocommit=True) as conn:
            deadline = time.monotonic() + 20
            while conn.execute("SELECT count(*) FROM readings").fetchone()[0] < 101:
                assert time.monotonic() < deadline, "the data commit waited for the device row lock"
                time.sleep(0.05)
            assert not done.is_set(), "only the after-commit last_seen update may wait for the row"
        holder.rollback()
        th.join(20)
        assert done.is_set()
        with psycopg.connect(fresh_db) as conn:
            assert conn.execute("SELECT extract(epoch FROM last_seen) * 1000 FROM devices").fetchone()[0] == t + 10
    finally:
        holder.close()
        st.close()


def test_store_direct_copy_and_staging_route_store_each_key_once_with_the_same_time(fresh_db):
    from fieldwatch.wire import codec
    migrate(fresh_db, log_progress=lambda m: None)
    st = Store(fresh_db)
    t = 1763880123457                                    # not a round second: ms must survive both routes
    try:
        assert st.write(batch_of("pump-03", range(10), t, t + 5)) == {"readings": 10}      # direct COPY
        assert st.write(batch_of("pump-03", range(5, 15), t, t + 9)) == {"readings": 5}    # duplicates: staging
        mixed = batch_of("pump-03", range(3), t, t + 12)
        mixed.add(Message("fieldwatch/v1/pump-03/telemetry/readings",
                          codec.encode_readings("pump-03", 1, 15, 42000, "none", [[0, "rms_g", 0.5]]), 99, 1, False,
                          t + 12, 1))
        assert mixed.untimed
        assert st.write(mixed) == {"readings": 1}, "a record without wall-clock time sends the batch the staging way"
        with psycopg.connect(fresh_db) as conn:
            assert conn.execute("SELECT count(*), count(DISTINCT seq) FROM readings").fetchone() == (16, 16)
            assert conn.execute("SELECT count(*) FROM readings WHERE ts = timestamptz 'epoch' + %s * interval '1 ms'",
                                (t,)).fetchone()[0] == 15
            # the first untimed record of a boot fixes the boot's start at receipt - its ms since boot
            assert conn.execute("SELECT extract(epoch FROM recv_ts - ts) * 1000 FROM readings WHERE seq = 15"
                                ).fetchone()[0] == 0
    finally:
        st.close()
