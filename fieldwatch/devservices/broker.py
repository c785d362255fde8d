"""A private Mosquitto 2.x broker (tests, the demo, the benchmarks).

    b = Broker()          # temp dir, free port, config written; not yet running
    b.start()             # returns once the port accepts connections
    b.url                 # 'mqtt://127.0.0.1:PORT'
    b.stop(); b.start()   # clean restart: same port, same persistence file
    b.kill()              # SIGKILL: a crash; queued state since the last autosave is lost
    b.cleanup()           # kill if running, delete the temp dir

The config is the one production runs with (persistence, generous queues and
inflight window, persistent sessions kept for a day) except that it listens on
127.0.0.1 only, allows anonymous clients and, when it runs as root, says
`user root` so Mosquitto does not drop to the `mosquitto` user (which could not
write the temp dir).
"""

import os
import shutil
import signal
import subprocess
import tempfile
import time

from . import Reaper, register, tail, unregister
from .ports import LOCALHOST, free_port, port_is_open, wait_for_port

MOSQUITTO = "/usr/sbin/mosquitto"


class BrokerError(RuntimeError):
    """The broker did not start or stop as asked; the message includes its log tail."""


def find_mosquitto():
    """Path of the mosquitto executable (/usr/sbin/mosquitto, else PATH), or None."""
    if os.access(MOSQUITTO, os.X_OK):
        return MOSQUITTO
    return shutil.which("mosquitto")


class Broker:
    """A Mosquitto process with its own temp dir, port, config, log and persistence DB.

    Arguments (all optional):
      port              TCP port on 127.0.0.1; default: a free one, kept across restarts.
      autosave_interval seconds between persistence DB saves while running (default 1);
                        a clean stop() always saves.
      extra_config      extra lines appended to mosquitto.conf.
      executable        mosquitto binary (default /usr/sbin/mosquitto).
    """

    def __init__(self, port=None, autosave_interval=1, extra_config=(), executable=None):
        self.executable = executable or find_mosquitto()
        if not self.executable:
            raise BrokerError("mosquitto is not installed (apt-get install mosquitto)")
        self.host = LOCALHOST
        self.port = port or free_port(self.host)
        self.dir = tempfile.mkdtemp(prefix="fw-mosquitto-")
        self.config_path = os.path.join(self.dir, "mosquitto.conf")
        self.log_path = os.path.join(self.dir, "mosquitto.log")
        self.stderr_path = os.path.join(self.dir, "mosquitto.stderr")
        self.persistence_path = os.path.join(self.dir, "mosquitto.db")
        self._pid_path = os.path.join(self.dir, "mosquitto.pid")
        self._proc = None
        self._reaper = None
        self._write_config(autosave_interval, extra_config)
        register(self)
        self._reaper = Reaper(pidfiles=[self._pid_path], rmtree=self.dir)

    # ---- properties ---------------------------------------------------------

    @property
    def url(self):
        """'mqtt://127.0.0.1:PORT'."""
        return "mqtt://%s:%d" % (self.host, self.port)

    @property
    def running(self):
        """True while the mosquitto process is alive."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self):
        """Pid of the running mosquitto process, or None."""
        return self._proc.pid if self.running else None

    def log_tail(self, lines=40):
        """The last lines of the broker's log file and of its stderr."""
        out = tail(self.log_path, lines)
        if os.path.exists(self.stderr_path) and os.path.getsize(self.stderr_path):
            out += "\n--- stderr ---\n" + tail(self.stderr_path, lines)
        return out

    # ---- lifecycle ----------------------------------------------------------

    def _write_config(self, autosave_interval, extra_config):
        lines = [
            "# Written by fieldwatch/devservices/broker.py",
            "per_listener_settings false",
            "listener %d %s" % (self.port, self.host),
            "allow_anonymous true",
            "persistence true",
            "persistence_location %s/" % self.dir,
            "persistence_file mosquitto.db",
            "autosave_interval %d" % autosave_interval,
            "autosave_on_changes false",
            "max_inflight_messages 1000",
            "max_queued_messages 1000000",
            "max_queued_bytes 0",
            # Message size: Mosquitto's default, i.e. only the MQTT maximum (256 MB);
            # message_size_limit is deprecated in 2.0 and only adds a warning.
            "persistent_client_expiration 1d",
            "set_tcp_nodelay true",
            "log_dest file %s" % self.log_path,
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_type information",
            "connection_messages true",
            "log_timestamp true",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
        ]
        if os.geteuid() == 0:
            lines.append("user root")
        lines.extend(extra_config)
        with open(self.config_path, "w") as f:
            f.write("\n".join(lines) + "\n")

    def start(self, timeout=10.0):
        """Start mosquitto and wait until the port accepts connections.

        No-op if already running. Raises BrokerError (with the log tail) if the
        port is taken by another process, or the broker exits or is not
        listening within `timeout` seconds.
        """
        if self.running:
            return self
        if port_is_open(self.host, self.port, timeout=0.2):
            raise BrokerError("port %d is already in use by another process; cannot start "
                              "the broker there" % self.port)
        with open(self.stderr_path, "ab") as err:
            self._proc = subprocess.Popen(
                [self.executable, "-c", self.config_path],
                stdin=subprocess.DEVNULL, stdout=err, stderr=subprocess.STDOUT,
                cwd=self.dir, start_new_session=True, close_fds=True)
        with open(self._pid_path, "w") as f:
            f.write("%d\n" % self._proc.pid)
        ok = wait_for_port(self.host, self.port, timeout=timeout,
                           alive=lambda: self._proc.poll() is None)
        if not ok or not self.running:
            rc = self._proc.poll()
            self._hard_kill()
            raise BrokerError(
                "mosquitto on port %d %s\n--- log tail (%s) ---\n%s" % (
                    self.port,
                    "exited with code %s" % rc if rc is not None
                    else "was not listening after %.1f s" % timeout,
                    self.log_path, self.log_tail()))
        return self

    def stop(self, timeout=10.0):
        """Clean shutdown: SIGTERM and wait; mosquitto saves its persistence DB on exit.

        No-op if not running. If it has not exited within `timeout` seconds it
        is SIGKILLed and BrokerError is raised (the DB may then be stale).
        """
        if not self.running:
            self._proc = None
            return
        self._proc.send_signal(signal.SIGTERM)
        try:
            self._proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self._hard_kill()
            raise BrokerError("mosquitto did not exit within %.1f s of SIGTERM; killed\n%s"
                              % (timeout, self.log_tail()))
        self._proc = None

    def kill(self):
        """Crash the broker: SIGKILL and wait. Nothing is saved beyond the last autosave."""
        self._hard_kill()

    def restart(self, timeout=10.0):
        """stop() then start(): same port, same config, same persistence file."""
        self.stop(timeout=timeout)
        return self.start(timeout=timeout)

    def _hard_kill(self):
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
        if proc is not None:
            proc.wait()

    def wait_logged(self, text, timeout=10.0):
        """Wait until `text` appears in the broker log. True if it did in time."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                with open(self.log_path, errors="replace") as f:
                    if text in f.read():
                        return True
            except OSError:
                pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def cleanup(self):
        """Kill the broker if it runs and delete its temp dir. Safe to call twice."""
        self._hard_kill()
        if self._reaper is not None:
            self._reaper.release()
            self._reaper = None
        shutil.rmtree(self.dir, ignore_errors=True)
        unregister(self)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.cleanup()

    def __repr__(self):
        return "<Broker %s %s>" % (self.url, "running" if self.running else "stopped")
