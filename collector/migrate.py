"""Versioned, idempotent schema migrations (collector/migrations/NNNN_name.sql).

Applied in order, each in its own transaction, under an advisory lock, so
several collectors starting at once apply each migration exactly once.

A database has one *storage* for its time-series tables, chosen at its first
migration and recorded in `schema_settings` (it never changes afterwards,
because TimescaleDB cannot turn a declaratively partitioned table into a
hypertable, and a hypertable is not a partitioned table):

  timescaledb  the extension is installed in the database, or is available on
               the server and `CREATE EXTENSION timescaledb` succeeds (it needs
               shared_preload_libraries = 'timescaledb'). 0001 creates plain
               tables and the `_timescale` migrations turn them into
               hypertables with compression, retention and a continuous
               aggregate.
  partitioned  otherwise: 0001 creates the tables with PARTITION BY RANGE (ts)
               (monthly partitions made ahead by partitions.py) and the
               `_timescale` migrations are recorded as skipped.

`plan()` is that selection, a pure function of the migration files, the
versions already applied and the storage.
"""

import logging
from importlib import resources

import psycopg

from collector import partitions
from collector.schema import READINGS

log = logging.getLogger("collector.migrate")

_LOCK_KEY = 0x6669656C64  # "field": advisory lock id for migrations

TIMESCALEDB = "timescaledb"
PARTITIONED = "partitioned"
_PARTITION_CLAUSE = {TIMESCALEDB: "", PARTITIONED: "PARTITION BY RANGE (ts)"}


def migration_files():
    """[(version, name, sql)] in version order."""
    out = []
    for entry in resources.files("collector").joinpath("migrations").iterdir():
        if entry.name.endswith(".sql"):
            version = int(entry.name.split("_", 1)[0])
            out.append((version, entry.name[:-4], entry.read_text()))
    return sorted(out)


def plan(files, done, storage):
    """[(version, name, action, sql)] still to do: action 'apply' (sql ready to run) or 'skip' (sql None).

    `_timescale` migrations apply only with TimescaleDB storage; {{PARTITIONED}}
    in a migration becomes the partitioning clause of the storage.
    """
    if storage not in _PARTITION_CLAUSE:
        raise ValueError("unknown storage %r" % (storage,))
    out = []
    for version, name, sql in files:
        if version in done:
            continue
        if name.endswith("_timescale") and storage != TIMESCALEDB:
            out.append((version, name, "skip", None))
        else:
            out.append((version, name, "apply", sql.replace("{{PARTITIONED}}", _PARTITION_CLAUSE[storage])))
    return out


def timescale_usable(conn):
    """(True, how) if TimescaleDB is or can be installed in this database, else (False, why). conn: autocommit."""
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone():
        return True, "extension installed"
    if not conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone():
        return False, "timescaledb is not installed on this PostgreSQL server"
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as e:
        return False, "CREATE EXTENSION timescaledb failed: %s" % (str(e).strip().splitlines() or [type(e).__name__])[0]
    return True, "extension created"


def storage_of(conn, log_progress=print):
    """The database's storage: as recorded, as its existing tables show, or chosen now (and recorded)."""
    conn.execute("CREATE TABLE IF NOT EXISTS schema_settings (key text PRIMARY KEY, value text NOT NULL)")
    row = conn.execute("SELECT value FROM schema_settings WHERE key = 'storage'").fetchone()
    if row:
        return row[0]
    if conn.execute("SELECT to_regclass(%s)", (READINGS.name,)).fetchone()[0] is not None:
        # A database migrated before the storage was recorded: its tables say which it is.
        partitioned = conn.execute("SELECT 1 FROM pg_partitioned_table WHERE partrelid = %s::regclass",
                                   (READINGS.name,)).fetchone()
        storage, why = (PARTITIONED, "existing partitioned tables") if partitioned else (TIMESCALEDB, "existing plain tables")
    else:
        usable, why = timescale_usable(conn)
        storage = TIMESCALEDB if usable else PARTITIONED
    conn.execute("INSERT INTO schema_settings (key, value) VALUES ('storage', %s) ON CONFLICT DO NOTHING", (storage,))
    log_progress("storage: %s (%s)" % (storage, why))
    return storage


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
            storage = storage_of(conn, log_progress)
            for version, name, action, sql in plan(migration_files(), done, storage):
                with conn.transaction():
                    if action == "apply":
                        conn.execute(sql)
                    conn.execute("INSERT INTO schema_migrations (version, name, status) VALUES (%s, %s, %s)",
                                 (version, name, "applied" if action == "apply" else "skipped"))
                if action == "apply":
                    log_progress("migration %s: applied" % name)
                    applied_now.append(name)
                else:
                    log_progress("migration %s: skipped (storage is %s)" % (name, storage))
            made = partitions.ensure(conn)
            if made:
                log_progress("partitions created: %s" % ", ".join(made))
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
    return applied_now
