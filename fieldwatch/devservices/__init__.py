"""Dev services: private, real instances of what Fieldwatch talks to, for the demo, the benchmarks and the tests.

- `devservices.broker.Broker`: a private Mosquitto 2.x on a free port in a temp dir.
- `devservices.postgres.PostgresCluster`: a private PostgreSQL cluster (initdb/pg_ctl).
- `devservices.collector.CollectorProcess`: the real `collector` console script as a child process.
- `devservices.micropython`: run code under the MicroPython Unix port, precompile .mpy files.
- `devservices.ports`: free-port and wait-for-port helpers.
- `devservices.checkout`: the source checkout some of them need (firmware/), and a clear error without one.

Clean-up, in three layers, so no server outlives the process that started it:

1. The caller (a pytest fixture in tests/conftest.py, the demo, a benchmark)
   stops and removes what it started.
2. Every live service is registered here; an `atexit` hook kills whatever is
   left when the interpreter exits normally (an error, Ctrl-C, sys.exit).
3. Each service also gets a *reaper*: a tiny helper process, in its own
   session, that holds the read end of a pipe from the starting process. If
   that process dies without releasing it (SIGKILL, an OOM kill, a CI
   timeout) the pipe reaches EOF and the reaper runs the service's emergency
   stop (e.g. `pg_ctl -m immediate stop`), SIGKILLs the pid in its pid file
   and deletes the temp directory.
"""

import atexit
import json
import os
import subprocess
import sys
import threading

__all__ = ["Reaper", "register", "unregister", "cleanup_all", "tail"]

_LIVE = set()
_LIVE_LOCK = threading.Lock()


def register(service):
    """Track `service` (anything with a `cleanup()` method) for the atexit hook."""
    with _LIVE_LOCK:
        _LIVE.add(service)


def unregister(service):
    """Stop tracking `service` (called by its own `cleanup()`)."""
    with _LIVE_LOCK:
        _LIVE.discard(service)


@atexit.register
def cleanup_all():
    """Kill and remove every service still registered. Safe to call twice."""
    with _LIVE_LOCK:
        services = list(_LIVE)
    for service in services:
        try:
            service.cleanup()
        except Exception:  # best effort at exit: keep cleaning the others
            pass


def tail(path, lines=40):
    """The last `lines` lines of a text file, or a note if it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 64 * 1024))
            data = f.read().decode("utf-8", "replace")
    except OSError as e:
        return "<cannot read %s: %s>" % (path, e)
    return "\n".join(data.splitlines()[-lines:])


_REAPER_CODE = r"""
import json, os, shutil, signal, subprocess, sys
spec = json.loads(sys.argv[1])
try:
    released = sys.stdin.buffer.read(2) == b"ok"
except BaseException:
    released = False
if released:
    sys.exit(0)
# The starting process died without releasing us: clean up after it.
if spec.get("argv"):
    try:
        subprocess.run(spec["argv"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30)
    except Exception:
        pass
for pidfile in spec.get("pidfiles") or ():
    try:
        with open(pidfile) as f:
            pid = int(f.readline().strip())
        if pid > 1:
            os.kill(pid, signal.SIGKILL)
    except Exception:
        pass
if spec.get("rmtree"):
    shutil.rmtree(spec["rmtree"], ignore_errors=True)
"""


class Reaper:
    """A watchdog process that cleans up after a service if the process that started it dies.

    argv:     command to run first (e.g. an immediate-mode `pg_ctl stop`).
    pidfiles: files whose first line is a pid to SIGKILL afterwards.
    rmtree:   a directory to delete last.

    Call `release()` once the service has been cleaned up normally; the reaper
    then exits without doing anything.
    """

    def __init__(self, argv=None, pidfiles=(), rmtree=None):
        spec = {"argv": list(argv) if argv else None,
                "pidfiles": [str(p) for p in pidfiles],
                "rmtree": str(rmtree) if rmtree else None}
        self._proc = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _REAPER_CODE, json.dumps(spec)],
            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True, close_fds=True)

    def release(self):
        """Tell the reaper the service is gone; it exits without touching anything."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            proc.stdin.write(b"ok")
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
