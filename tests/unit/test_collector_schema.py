"""collector.schema: one table per wire kind, row types that match their tables, ms times COPYed exactly."""

import datetime as dt

from psycopg import postgres
from psycopg.adapt import AdaptersMap, Transformer
from psycopg.pq import Format

from collector import schema
from collector.store import EpochMsDumper
from fieldwatch.wire import topics


def test_schema_every_kind_a_device_publishes_has_one_table():
    assert set(schema.TABLE_OF_KIND) == set(topics.DEVICE_PUBLISHES) | {"cmd"}
    for table in schema.RECORD_TABLES:
        assert schema.TABLE_OF_KIND[table.kind] is table
    assert len({t.name for t in schema.TABLE_OF_KIND.values()}) == len(schema.RECORD_TABLES) + 2


def test_schema_row_types_are_the_head_then_the_table_columns_with_one_copy_type_each():
    for table in schema.RECORD_TABLES:
        assert table.Row._fields == schema.HEAD_FIELDS + table.columns
        assert len(table.types) == len(table.columns)
        assert all(postgres.types.get(t) is not None for t in table.types), table
    assert schema.FEATURE_WINDOWS.columns[3:15] == schema.AXIS_FEATURE_COLUMNS
    assert schema.telemetry_columns(schema.READINGS) == ("boot", "seq", "ts", "recv_ts", "tq", "name", "value")


def test_schema_api_telemetry_kinds_read_record_tables():
    assert list(schema.API_TELEMETRY) == ["readings", "features", "fixes", "logs"]
    assert all(t in schema.RECORD_TABLES for t in schema.API_TELEMETRY.values())


def test_store_epoch_ms_dumper_writes_the_bytes_of_the_same_time_as_a_datetime():
    ctx_ms = type("Ctx", (), {"adapters": AdaptersMap(postgres.adapters), "connection": None})()
    ctx_ms.adapters.register_dumper(type("EpochMs", (int,), {}), EpochMsDumper)
    ctx_dt = type("Ctx", (), {"adapters": AdaptersMap(postgres.adapters), "connection": None})()
    oid = [postgres.types["timestamptz"].oid]
    tx_ms, tx_dt = Transformer(ctx_ms), Transformer(ctx_dt)
    tx_ms.set_dumper_types(oid, Format.BINARY)
    tx_dt.set_dumper_types(oid, Format.BINARY)
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    for ms in (0, 1, 946684799999, 946684800000, 1577836800000, 1763880123457, 4102444800001):
        want = tx_dt.dump_sequence([epoch + dt.timedelta(milliseconds=ms)], [Format.BINARY])[0]
        assert bytes(tx_ms.dump_sequence([ms], [Format.BINARY])[0]) == bytes(want), ms
