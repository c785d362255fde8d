"""A private PostgreSQL cluster (tests, the demo, the benchmarks).

    c = PostgresCluster()     # initdb in a temp dir (~1-2 s), free port; not yet running
    c.start()                 # pg_ctl start -w
    url = c.create_database() # 'postgresql://postgres@127.0.0.1:PORT/test_0123abcd4567'
    c.kill()                  # pg_ctl -m immediate stop: a crash, recovery on next start
    c.start()
    c.drop_database(name)
    c.cleanup()               # stop and delete the temp dir

PostgreSQL refuses to run as root. When the caller runs as root the temp dir is
chowned to the `postgres` user and initdb/pg_ctl run through
`runuser -u postgres --`; as any other user they run directly.

The server listens on 127.0.0.1 (TCP, trust auth, superuser `postgres`) and on a
Unix socket in the temp dir. Durability settings are the production ones
(fsync on, synchronous_commit on, full_page_writes on) so that kill() tests mean
something; only initdb itself runs with --no-sync.
"""

import glob
import os
import re
import shutil
import stat
import subprocess
import tempfile
import time
import uuid

from . import Reaper, register, tail, unregister
from .ports import LOCALHOST, free_port, port_is_open

SUPERUSER = "postgres"

SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "max_connections": "200",
    "shared_buffers": "'128MB'",
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "logging_collector": "off",
    "log_min_messages": "warning",
    "log_line_prefix": "'%m [%p] %d '",
    "timezone": "'UTC'",
    "log_timezone": "'UTC'",
}


class PostgresError(RuntimeError):
    """initdb/pg_ctl failed; the message includes their output and the server log tail."""


def _version_key(path):
    m = re.search(r"/postgresql/(\d+)(?:\.(\d+))?/bin$", path)
    return (int(m.group(1)), int(m.group(2) or 0)) if m else (0, 0)


def find_pg_bindir():
    """Directory holding initdb and pg_ctl: the newest /usr/lib/postgresql/<ver>/bin,
    else the directory of `pg_ctl` on PATH; None if PostgreSQL is not installed."""
    dirs = [os.path.dirname(p) for p in glob.glob("/usr/lib/postgresql/*/bin/pg_ctl")]
    dirs = [d for d in dirs if os.access(os.path.join(d, "initdb"), os.X_OK)]
    if dirs:
        return max(dirs, key=_version_key)
    pg_ctl = shutil.which("pg_ctl")
    return os.path.dirname(pg_ctl) if pg_ctl else None


def _world_traversable(path):
    """True if every directory from / to `path` lets other users pass through."""
    path = os.path.abspath(path)
    while True:
        if not os.stat(path).st_mode & stat.S_IXOTH:
            return False
        parent = os.path.dirname(path)
        if parent == path:
            return True
        path = parent


class PostgresCluster:
    """One PostgreSQL cluster (data dir, port, socket dir, log) in its own temp dir.

    Arguments (all optional):
      port      TCP port on 127.0.0.1; default: a free one, kept across restarts.
      bindir    directory with initdb/pg_ctl; default: find_pg_bindir().
      settings  dict of extra postgresql.conf settings (values as written in the file).

    initdb runs in the constructor; call start() to run the server.
    """

    def __init__(self, port=None, bindir=None, settings=None):
        self.bindir = bindir or find_pg_bindir()
        if not self.bindir:
            raise PostgresError("PostgreSQL is not installed (apt-get install postgresql)")
        self.version = _version_key(self.bindir)[0] or None
        self.host = LOCALHOST
        self.port = port or free_port(self.host)
        self._as_root = os.geteuid() == 0
        base = tempfile.gettempdir()
        if self._as_root and not _world_traversable(base):
            base = "/tmp"  # the postgres user must be able to reach the directory
        self.dir = tempfile.mkdtemp(prefix="fw-pg-", dir=base)
        self.datadir = os.path.join(self.dir, "data")
        self.socket_dir = self.dir
        self.log_path = os.path.join(self.dir, "postgres.log")
        self._reaper = None
        register(self)
        if self._as_root:
            import pwd
            pw = pwd.getpwnam(SUPERUSER)
            os.chown(self.dir, pw.pw_uid, pw.pw_gid)
        os.chmod(self.dir, 0o700)
        self._reaper = Reaper(
            argv=self._cmd("pg_ctl", "-D", self.datadir, "-m", "immediate", "-w", "-t", "20",
                           "stop"),
            pidfiles=[os.path.join(self.datadir, "postmaster.pid")],
            rmtree=self.dir)
        self._initdb(settings or {})

    # ---- plumbing -----------------------------------------------------------

    def _cmd(self, program, *args):
        argv = [os.path.join(self.bindir, program), *args]
        if self._as_root:
            argv = ["runuser", "-u", SUPERUSER, "--", *argv]
        return argv

    def _run(self, program, *args, timeout=60, check=True):
        argv = self._cmd(program, *args)
        try:
            r = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                               text=True, timeout=timeout, cwd=self.dir)
        except subprocess.TimeoutExpired as e:
            raise PostgresError("%s timed out after %s s\n--- server log ---\n%s"
                                % (" ".join(argv), timeout, tail(self.log_path))) from e
        if check and r.returncode != 0:
            raise PostgresError("%s failed with code %d\n%s%s\n--- server log (%s) ---\n%s" % (
                " ".join(argv), r.returncode, r.stdout, r.stderr, self.log_path,
                tail(self.log_path)))
        return r

    def _initdb(self, settings):
        args = ["-D", self.datadir, "-A", "trust", "-U", SUPERUSER, "-E", "UTF8",
                "--locale=C", "--no-sync"]
        if (self.version or 0) >= 14:
            args.append("--no-instructions")
        self._run("initdb", *args, timeout=120)
        conf = dict(SETTINGS)
        conf.update({"port": str(self.port),
                     "unix_socket_directories": "'%s'" % self.socket_dir})
        conf.update(settings)
        lines = ["", "# ---- fieldwatch/devservices/postgres.py ----"]
        lines += ["%s = %s" % kv for kv in conf.items()]
        with open(os.path.join(self.datadir, "postgresql.conf"), "a") as f:
            f.write("\n".join(lines) + "\n")

    # ---- state --------------------------------------------------------------

    @property
    def postmaster_pid(self):
        """Pid of the running postmaster (from postmaster.pid), or None."""
        try:
            with open(os.path.join(self.datadir, "postmaster.pid")) as f:
                pid = int(f.readline().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    @property
    def running(self):
        """True while the postmaster process is alive."""
        return self.postmaster_pid is not None

    def url(self, dbname="postgres"):
        """libpq URL of database `dbname`: 'postgresql://postgres@127.0.0.1:PORT/DBNAME'."""
        return "postgresql://%s@%s:%d/%s" % (SUPERUSER, self.host, self.port, dbname)

    def log_tail(self, lines=40):
        """The last lines of the server log."""
        return tail(self.log_path, lines)

    # ---- lifecycle ----------------------------------------------------------

    def start(self, timeout=60):
        """Start the server (`pg_ctl start -w`); returns when it accepts connections.
        No-op if already running. After kill() this runs crash recovery first."""
        if self.running:
            return self
        if port_is_open(self.host, self.port, timeout=0.2):
            raise PostgresError("port %d is already in use by another process" % self.port)
        self._run("pg_ctl", "-D", self.datadir, "-l", self.log_path, "-w",
                  "-t", str(int(timeout)), "start", timeout=timeout + 10)
        return self

    def stop(self, timeout=60):
        """Fast shutdown (`pg_ctl -m fast stop`): open sessions are disconnected,
        a checkpoint is written. No-op if not running."""
        if self.running:
            self._run("pg_ctl", "-D", self.datadir, "-m", "fast", "-w",
                      "-t", str(int(timeout)), "stop", timeout=timeout + 10)

    def kill(self, timeout=60):
        """Crash the server (`pg_ctl -m immediate stop`): no checkpoint, every backend
        dies at once; the next start() runs WAL recovery. No-op if not running."""
        if self.running:
            self._run("pg_ctl", "-D", self.datadir, "-m", "immediate", "-w",
                      "-t", str(int(timeout)), "stop", timeout=timeout + 10)

    def restart(self, timeout=60):
        """stop() then start(): same port, same data."""
        self.stop(timeout=timeout)
        return self.start(timeout=timeout)

    def cleanup(self):
        """Crash-stop the server if it runs and delete the temp dir. Safe to call twice."""
        try:
            if os.path.isdir(self.datadir):
                self.kill(timeout=20)
        finally:
            if self._reaper is not None:
                self._reaper.release()
                self._reaper = None
            shutil.rmtree(self.dir, ignore_errors=True)
            unregister(self)

    # ---- databases ----------------------------------------------------------

    def connect(self, dbname="postgres", **kwargs):
        """A psycopg 3 connection to `dbname` (autocommit unless told otherwise)."""
        import psycopg
        kwargs.setdefault("autocommit", True)
        kwargs.setdefault("connect_timeout", 10)
        return psycopg.connect(self.url(dbname), **kwargs)

    def create_database(self, name=None):
        """Create a new, empty database (default name: test_<12 hex digits>);
        return its libpq URL."""
        from psycopg import sql
        name = name or "test_%s" % uuid.uuid4().hex[:12]
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name):
        """Drop database `name` (a name or a URL from create_database), disconnecting
        its sessions. No error if it does not exist."""
        from psycopg import sql
        name = name.rsplit("/", 1)[-1] if "://" in name else name
        with self.connect() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
                         .format(sql.Identifier(name)))

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    def __repr__(self):
        return "<PostgresCluster %s %s>" % (self.url(""), "running" if self.running else "stopped")


def wait_until_accepting(cluster, timeout=30.0):
    """Wait until a psycopg connection to `cluster` succeeds. True if it did in time."""
    import psycopg
    deadline = time.monotonic() + timeout
    while True:
        try:
            with cluster.connect(connect_timeout=2):
                return True
        except psycopg.OperationalError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
