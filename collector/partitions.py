"""Monthly partitions for the time-partitioned tables on plain PostgreSQL: a helper of the store.

Run by collector.store.Store.maintain() (hourly, from the ingest loop) and at
the end of every migration (collector.migrate); the tables are
collector.schema.RECORD_TABLES.

Each table gets a DEFAULT partition (late data older than the first monthly
partition lands there) and one partition per month from the current month to
MONTHS_AHEAD months ahead. Partitions are only ever created for the current
month and later, which the DEFAULT partition cannot hold rows for: data more
than a day in the future is rejected by the wire contract.
"""

import datetime as dt
import logging

import psycopg

from collector.schema import RECORD_TABLES

log = logging.getLogger("collector.partitions")

PARTITIONED_TABLES = tuple(t.name for t in RECORD_TABLES)
MONTHS_AHEAD = 2


def _month_start(d, add=0):
    y, m = divmod(d.year * 12 + d.month - 1 + add, 12)
    return dt.date(y, m + 1, 1)


def ensure(conn, today=None):
    """Create missing partitions on `conn` (autocommit); return the names created.

    Only tables that are declaratively partitioned are touched, so this is a
    no-op on a TimescaleDB database (hypertables make their own chunks).
    """
    today = today or dt.datetime.now(dt.timezone.utc).date()
    partitioned = {r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid")}
    existing = {r[0] for r in conn.execute(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid")}
    made = []
    for table in PARTITIONED_TABLES:
        if table not in partitioned:
            continue
        default = table + "_default"
        if default not in existing:
            conn.execute('CREATE TABLE IF NOT EXISTS "%s" PARTITION OF "%s" DEFAULT' % (default, table))
            made.append(default)
        for k in range(0, MONTHS_AHEAD + 1):
            lo, hi = _month_start(today, k), _month_start(today, k + 1)
            name = "%s_%04d%02d" % (table, lo.year, lo.month)
            if name in existing:
                continue
            try:
                conn.execute("CREATE TABLE IF NOT EXISTS \"%s\" PARTITION OF \"%s\" "
                             "FOR VALUES FROM ('%sT00:00:00Z') TO ('%sT00:00:00Z')"
                             % (name, table, lo.isoformat(), hi.isoformat()))
            except psycopg.Error as e:  # e.g. the DEFAULT partition already holds rows of that month
                log.warning("partition %s not created: %s", name, e)
                continue
            made.append(name)
    return made
