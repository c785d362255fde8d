"""Versioned, idempotent schema migrations (collector/migrations/NNNN_name.sql).

Applied in order under an advisory lock, so several collectors starting at once
apply each migration exactly once. A migration whose name ends in `_timescale`
is applied only where the timescaledb extension is available, and is recorded
as skipped otherwise. Plain-PostgreSQL tables are partitioned by month; see
partitions.py for the partitions made ahead.
"""

import logging
from importlib import resources

import psycopg

from collector import partitions

log = logging.getLogger("collector.migrate")

_LOCK_KEY = 0x6669656C64  # "field": advisory lock id for migrations


def migration_files():
    """[(version, name, sql)] in version order."""
    out = []
    for entry in resources.files("collector").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            out.append((version, entry.name[:-4], entry.read_text()))
    return sorted(out)


def timescale_available(conn):
    """True when the server can load the timescaledb extension."""
    row = conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone()
    return row is not None


def migrate(url, log_progress=print):
    """Bring the database at `url` up to date; return the list of migrations applied now."""
    applied_now = []
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
                                version integer PRIMARY KEY, name text NOT NULL,
                                status text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())""")
            done = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
            timescale = timescale_available(conn)
            for version, name, sql in migration_files():
                if version in done:
                    continue
                is_ts = name.endswith("_timescale")
                if is_ts and not timescale:
                    conn.execute("INSERT INTO schema_migrations (version, name, status) VALUES (%s, %s, 'skipped')",
                                 (version, name))
                    log_progress("migration %s: skipped (timescaledb extension not available)" % name)
                    continue
                sql = sql.replace("{{PARTITIONED}}", "" if timescale else "PARTITION BY RANGE (ts)")
                if is_ts:
                    # Some TimescaleDB statements refuse to run inside a transaction block.
                    for stmt in _statements(sql):
                        conn.execute(stmt)
                    conn.execute("INSERT INTO schema_migrations (version, name, status) VALUES (%s, %s, 'applied')",
                                 (version, name))
                else:
                    with conn.transaction():
                        conn.execute(sql)
                        conn.execute("INSERT INTO schema_migrations (version, name, status) VALUES (%s, %s, 'applied')",
                                     (version, name))
                log_progress("migration %s: applied" % name)
                applied_now.append(name)
            if not timescale:
                made = partitions.ensure(conn)
                if made:
                    log_progress("partitions created: %s" % ", ".join(made))
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now


def _statements(sql):
    # Split a migration without dollar-quoted bodies into statements.
    body = "\n".join(line for line in sql.splitlines() if not line.strip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]
