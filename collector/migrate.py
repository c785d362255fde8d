"""Versioned, idempotent schema migrations (collector/migrations/NNNN_name.sql).

Applied in order, each in its own transaction, under an advisory lock, so
several collectors starting at once apply each migration exactly once.

A database has one *storage* for its time-series tables, chosen at its first
migration and recorded in `schema_settings` (it never changes afterwards,
because TimescaleDB cannot turn a declaratively partitioned table into a
hypertable, and a hypertable is not a partitioned table):

  timescaledb  the extension is installed in the database, or is available on
               the server, preloaded (shared_preload_libraries = 'timescaledb')
               and `CREATE EXTENSION timescaledb` succeeds. 0001 creates plain
               tables and the `_timescale` migrations turn them into
               hypertables with compression, retention and a continuous
               aggregate.
  partitioned  the extension is absent from the server, or the operator asked
               for it (database.storage = partitioned): 0001 creates the tables
               with PARTITION BY RANGE (ts) (monthly partitions made ahead by
               partitions.py) and the `_timescale` migrations are recorded as
               skipped.

The setting database.storage (auto, timescaledb, partitioned) is the
operator's wish; choose_storage() is the decision, a pure function of it and
of what the server has. TimescaleDB installed on the server but not preloaded
is never taken silently for "partitioned": it is a StorageError saying what to
add to postgresql.conf (or to set database.storage = partitioned). Without the
preload, `CREATE EXTENSION timescaledb` ends the session (FATAL "must be
preloaded"), so it is checked first with SHOW shared_preload_libraries where
the role may read it, and the FATAL is recognised where it may not.

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


AUTO = "auto"
STORAGE_SETTINGS = (AUTO, TIMESCALEDB, PARTITIONED)   # database.storage

NOT_PRELOADED = (
    "TimescaleDB is installed on this PostgreSQL server but not preloaded, so the database cannot use it%s. "
    "Add this line to postgresql.conf%s and restart PostgreSQL:\n"
    "    shared_preload_libraries = 'timescaledb'\n"
    "(append timescaledb to the list if the line is already there). Or, to store the data without TimescaleDB "
    "(declaratively partitioned tables, chosen once for this database), set database.storage = \"partitioned\" "
    "(COLLECTOR_DATABASE_STORAGE=partitioned). See docs/collector.md, \"Storage\".")


class StorageError(Exception):
    """The storage asked for cannot be had on this server; the message says what to change."""


def preload_missing(error):
    """True if a PostgreSQL error is TimescaleDB's FATAL 'extension "timescaledb" must be preloaded'."""
    return "must be preloaded" in str(error)


def choose_storage(wanted, installed, available, preloaded, config_file=None):
    """(storage, why) for a database without record tables yet; raises StorageError.

    wanted: database.storage; installed: the extension exists in the database;
    available: the server has it (pg_available_extensions); preloaded: True,
    False, or None (the role may not read shared_preload_libraries).
    """
    if wanted not in STORAGE_SETTINGS:
        raise StorageError("database.storage = %r: use one of %s" % (wanted, ", ".join(STORAGE_SETTINGS)))
    if wanted == PARTITIONED:
        return PARTITIONED, "database.storage = partitioned"
    if not (installed or available):
        if wanted == TIMESCALEDB:
            raise StorageError("database.storage = timescaledb, but TimescaleDB is not installed on this "
                               "PostgreSQL server: install it (docs/collector.md, \"Storage\"), or set "
                               "database.storage = \"auto\" or \"partitioned\"")
        return PARTITIONED, "timescaledb is not installed on this PostgreSQL server"
    if preloaded is False:
        raise StorageError(not_preloaded_message(wanted, config_file))
    return TIMESCALEDB, "extension installed" if installed else "extension available"


def not_preloaded_message(wanted, config_file=None):
    """What to do about a TimescaleDB that is installed on the server but not preloaded."""
    return NOT_PRELOADED % (" (database.storage = %s)" % wanted,
                            " (%s)" % config_file if config_file else "")


def _setting(conn, name):
    # SHOW name, or None where this role may not read it (superuser or pg_read_all_settings only).
    try:
        with conn.transaction():
            return conn.execute("SHOW " + name).fetchone()[0]
    except psycopg.errors.InsufficientPrivilege:
        return None


def timescale_state(conn):
    """(installed, available, preloaded or None, config_file or None) of TimescaleDB for this database. conn: autocommit."""
    installed = bool(conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'").fetchone())
    available = bool(conn.execute("SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'").fetchone())
    libraries = _setting(conn, "shared_preload_libraries")
    preloaded = None if libraries is None else "timescaledb" in [
        lib.strip().strip('"') for lib in libraries.split(",")]
    return installed, available, preloaded, _setting(conn, "config_file")


def create_timescaledb(conn, wanted):
    """CREATE EXTENSION timescaledb; a StorageError (with what to do) if the server has not preloaded it."""
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.Error as e:
        if preload_missing(e):          # FATAL: this session is gone
            raise StorageError(not_preloaded_message(wanted)) from None
        raise


def storage_of(conn, log_progress=print, wanted=AUTO):
    """The database's storage: as recorded, as its existing tables show, or chosen now (and recorded).

    wanted: database.storage; a database whose storage is already set keeps it,
    and asking for the other one is a StorageError.
    """
    conn.execute("CREATE TABLE IF NOT EXISTS schema_settings (key text PRIMARY KEY, value text NOT NULL)")
    row = conn.execute("SELECT value FROM schema_settings WHERE key = 'storage'").fetchone()
    if row:
        storage, why = row[0], None
    elif conn.execute("SELECT to_regclass(%s)", (READINGS.name,)).fetchone()[0] is not None:
        # A database migrated before the storage was recorded: its tables say which it is.
        partitioned = conn.execute("SELECT 1 FROM pg_partitioned_table WHERE partrelid = %s::regclass",
                                   (READINGS.name,)).fetchone()
        storage, why = (PARTITIONED, "existing partitioned tables") if partitioned else (TIMESCALEDB, "existing plain tables")
    else:
        installed, available, preloaded, config_file = timescale_state(conn)
        storage, why = choose_storage(wanted, installed, available, preloaded, config_file)
        if storage == TIMESCALEDB and not installed:
            create_timescaledb(conn, wanted)
            why = "extension created"
    if wanted not in (AUTO, storage):
        raise StorageError("database.storage = %s, but this database already stores its data as %s, which never "
                           "changes (docs/collector.md, \"Storage\"): set database.storage = \"auto\" or %s, "
                           "or use a new database" % (wanted, storage, storage))
    if why is not None:
        conn.execute("INSERT INTO schema_settings (key, value) VALUES ('storage', %s) ON CONFLICT DO NOTHING",
                     (storage,))
        log_progress("storage: %s (%s)" % (storage, why))
    return storage


def migrate(url, log_progress=print, storage=AUTO):
    """Bring the database at `url` up to date; return the list of migrations applied now.

    storage: database.storage (auto, timescaledb, partitioned); raises StorageError
    when it cannot be had, psycopg errors when the database cannot be reached.
    """
    applied_now = []
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
        try:
            conn.execute("""CREATE TABLE IF NOT EXISTS schema_migrations (
                                version integer PRIMARY KEY, name text NOT NULL,
                                status text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())""")
            done = {v for (v,) in conn.execute("SELECT version FROM schema_migrations")}
            storage = storage_of(conn, log_progress, storage)
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
