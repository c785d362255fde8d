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


# ---- choose_storage(): database.storage against what the server has (issue 14, part 4) ------------

def test_migrate_choose_storage_auto_keeps_partitioned_where_timescaledb_is_absent():
    assert migrate.choose_storage("auto", False, False, False) == (
        "partitioned", "timescaledb is not installed on this PostgreSQL server")
    assert migrate.choose_storage("auto", False, True, True) == ("timescaledb", "extension available")
    assert migrate.choose_storage("auto", True, True, None) == ("timescaledb", "extension installed")
    assert migrate.choose_storage("partitioned", False, True, False) == (
        "partitioned", "database.storage = partitioned")


@pytest.mark.parametrize("wanted", ["auto", "timescaledb"])
def test_migrate_choose_storage_installed_but_not_preloaded_says_what_to_add_to_postgresql_conf(wanted):
    with pytest.raises(migrate.StorageError) as e:
        migrate.choose_storage(wanted, False, True, False, "/etc/postgresql/15/main/postgresql.conf")
    text = str(e.value)
    assert "installed on this PostgreSQL server but not preloaded" in text
    assert "shared_preload_libraries = 'timescaledb'" in text and "restart PostgreSQL" in text
    assert "postgresql.conf (/etc/postgresql/15/main/postgresql.conf)" in text
    assert 'database.storage = "partitioned"' in text, "the fallback is the operator's choice, and named"
    assert "cannot reach" not in text


def test_migrate_choose_storage_refuses_what_the_server_cannot_give():
    with pytest.raises(migrate.StorageError, match="not installed on this PostgreSQL server"):
        migrate.choose_storage("timescaledb", False, False, False)
    with pytest.raises(migrate.StorageError, match="use one of auto, timescaledb, partitioned"):
        migrate.choose_storage("hypertable", False, False, False)
