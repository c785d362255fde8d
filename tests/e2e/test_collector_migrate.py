"""Migrations and storage selection against the real PostgreSQL, which has no TimescaleDB.

The TimescaleDB branch cannot run here (TimescaleDB is not packaged for
Debian); what can be checked is that the selection sees the extension missing,
that the plain-PostgreSQL path is complete, and that the plain (unpartitioned)
tables the TimescaleDB path starts from work with the collector's writer.
"""

import time

import psycopg

from collector import migrate, partitions, schema
from collector.batch import Batch
from collector.mqtt import Message
from collector.store import Store
from fieldwatch.tools.loadgen import reading_payload
from fieldwatch.wire import codec


def _relkinds(conn):
    return dict(conn.execute("SELECT relname, relkind FROM pg_class WHERE relname IN "
                             "('readings', 'fixes', 'feature_windows', 'waveforms', 'device_logs', 'vibration_1m')"))


def test_migrate_without_timescaledb_records_partitioned_storage_and_skips_0002(fresh_db):
    lines = []
    assert migrate.migrate(fresh_db, log_progress=lines.append) == ["0001_core"]
    assert "storage: partitioned (timescaledb is not installed on this PostgreSQL server)" in lines
    assert "migration 0002_timescale: skipped (storage is partitioned)" in lines
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        installed, available, preloaded, _conf = migrate.timescale_state(conn)
        assert (installed, available, preloaded) == (False, False, False), "the real server has no TimescaleDB"
        assert conn.execute("SELECT version, name, status FROM schema_migrations ORDER BY 1").fetchall() == [
            (1, "0001_core", "applied"), (2, "0002_timescale", "skipped")]
        assert conn.execute("SELECT value FROM schema_settings WHERE key = 'storage'").fetchone() == ("partitioned",)
        kinds = _relkinds(conn)
        assert kinds.pop("vibration_1m") == "v", "a plain view stands in for the continuous aggregate"
        assert set(kinds.values()) == {"p"}, kinds
        assert partitions.ensure(conn) == [], "partitions were made ahead by the migration"
    assert migrate.migrate(fresh_db, log_progress=lines.append) == []


def test_migrate_storage_is_inferred_for_a_database_migrated_before_it_was_recorded(fresh_db):
    migrate.migrate(fresh_db, log_progress=lambda m: None)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("DROP TABLE schema_settings")
        lines = []
        assert migrate.storage_of(conn, lines.append) == "partitioned"
        assert lines == ["storage: partitioned (existing partitioned tables)"]
        assert migrate.storage_of(conn, lines.append) == "partitioned" and len(lines) == 1, "recorded once"


def test_migrate_timescale_path_starts_from_plain_tables_the_collector_can_write(fresh_db):
    (core,) = [sql for v, n, a, sql in migrate.plan(migrate.migration_files(), set(), migrate.TIMESCALEDB)
               if n == "0001_core"]
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(core)
        kinds = _relkinds(conn)
        assert kinds.pop("vibration_1m") == "v"
        assert set(kinds.values()) == {"r"}, "plain tables, which create_hypertable() accepts"
        assert partitions.ensure(conn) == [], "nothing to partition on TimescaleDB storage"
        lines = []
        assert migrate.storage_of(conn, lines.append) == "timescaledb"
        assert lines == ["storage: timescaledb (existing plain tables)"]
    now = int(time.time() * 1000)
    b = Batch()
    b.add(Message("fieldwatch/v1/rig-1/telemetry/readings", reading_payload("rig-1", 1, 0, now), 1, 1, False, now, 1))
    win = {"dt": 0, "len_ms": 1000, "rate_hz": 800, "n": 800, "band_hz": [0, 400],
           "x": {"rms": 0.07, "peak": 0.28, "crest": 4.0, "dom_hz": 360.0, "bands": [0.004]}}
    b.add(Message("fieldwatch/v1/rig-1/telemetry/features", codec.encode_features("rig-1", 1, 1, now, "ntp", [win]),
                  2, 1, False, now, 1))
    st = Store(fresh_db)
    try:
        assert st.write(b) == {"readings": 1, "feature_windows": 1}
        assert st.write(b) == {"readings": 0, "feature_windows": 0}, "dedupe on the key works on plain tables too"
    finally:
        st.close()
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT device_id, windows, x_rms, x_peak FROM vibration_1m").fetchall() == [
            ("rig-1", 1, 0.07, 0.28)]


def test_migrate_creates_the_tables_and_columns_collector_schema_names(fresh_db):
    migrate.migrate(fresh_db, log_progress=lambda m: None)
    head = ["text", "int8", "int8", "timestamptz", "timestamptz", "text"]
    with psycopg.connect(fresh_db) as conn:
        for table in schema.RECORD_TABLES:
            cols = conn.execute("SELECT column_name, udt_name FROM information_schema.columns "
                                "WHERE table_schema = 'public' AND table_name = %s ORDER BY ordinal_position",
                                (table.name,)).fetchall()
            assert cols == list(zip(schema.HEAD_COLUMNS + table.columns,
                                    head + ["_" + t[:-2] if t.endswith("[]") else t
                                            for t in table.types])), table
        for table in set(schema.TABLE_OF_KIND.values()) | set(schema.COUNTED) | {schema.DEVICE_BOOTS}:
            assert conn.execute("SELECT to_regclass(%s)", (table.name,)).fetchone()[0] is not None, table


# ---- database.storage, and TimescaleDB installed but not preloaded (issue 14, part 4) ---------------

def test_migrate_storage_setting_partitioned_and_timescaledb_on_a_server_without_it(fresh_db):
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        try:
            migrate.storage_of(conn, print, "timescaledb")
            raise AssertionError("database.storage = timescaledb accepted on a server without TimescaleDB")
        except migrate.StorageError as e:
            assert "TimescaleDB is not installed on this PostgreSQL server" in str(e)
        assert conn.execute("SELECT count(*) FROM schema_settings").fetchone() == (0,), "nothing recorded"
    lines = []
    assert migrate.migrate(fresh_db, lines.append, storage="partitioned") == ["0001_core"]
    assert "storage: partitioned (database.storage = partitioned)" in lines
    assert migrate.migrate(fresh_db, lines.append, storage="auto") == []
    try:
        migrate.migrate(fresh_db, lines.append, storage="timescaledb")
        raise AssertionError("a partitioned database accepted database.storage = timescaledb")
    except migrate.StorageError as e:
        assert "already stores its data as partitioned" in str(e)


def test_migrate_recognises_the_real_fatal_of_a_timescaledb_library_postgresql_cannot_load(fresh_db):
    """The error PostgreSQL really raises when TimescaleDB is not preloaded cannot be made here (no
    TimescaleDB); what can: the real error of a library it cannot load is not taken for the preload
    error, and the preload FATAL's text (TimescaleDB 2.28.3, src/extension_utils.c) is."""
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        try:
            conn.execute("LOAD 'timescaledb'")
            raise AssertionError("this server has a timescaledb library")
        except psycopg.Error as e:
            real = e
    assert "timescaledb" in str(real) and not migrate.preload_missing(real)
    fatal = psycopg.OperationalError('extension "timescaledb" must be preloaded')
    assert migrate.preload_missing(fatal)
