"""Which migrations run on which storage: collector.migrate.plan() over the real migration files."""

import pytest

from collector import migrate

FILES = migrate.migration_files()


def test_migrate_plan_partitioned_storage_partitions_0001_and_skips_timescale_files():
    steps = migrate.plan(FILES, set(), migrate.PARTITIONED)
    assert [(v, n, a) for v, n, a, _ in steps] == [(1, "0001_core", "apply"), (2, "0002_timescale", "skip")]
    sql = steps[0][3]
    assert "{{PARTITIONED}}" not in sql
    assert sql.count(") PARTITION BY RANGE (ts);") == 5, "readings, fixes, feature_windows, waveforms, device_logs"


def test_migrate_plan_timescale_storage_makes_plain_tables_and_applies_0002():
    steps = migrate.plan(FILES, set(), migrate.TIMESCALEDB)
    assert [(v, n, a) for v, n, a, _ in steps] == [(1, "0001_core", "apply"), (2, "0002_timescale", "apply")]
    core = steps[0][3]
    assert ") PARTITION BY" not in core and core.count(") ;") == 5, "create_hypertable() refuses partitioned tables"
    ts = steps[1][3]
    for table in ("readings", "fixes", "feature_windows", "waveforms", "device_logs"):
        assert "create_hypertable('%s', 'ts'" % table in ts
    for needle in ("add_compression_policy", "add_retention_policy", "timescaledb.continuous",
                   "add_continuous_aggregate_policy", "CREATE MATERIALIZED VIEW vibration_1m"):
        assert needle in ts


def test_migrate_plan_skips_what_is_done_and_rejects_an_unknown_storage():
    assert migrate.plan(FILES, {1, 2}, migrate.PARTITIONED) == []
    assert [s[1] for s in migrate.plan(FILES, {1}, migrate.TIMESCALEDB)] == ["0002_timescale"]
    with pytest.raises(ValueError, match="unknown storage"):
        migrate.plan(FILES, set(), "citus")
