"""Run the real `collector` console script as a child process, to stop, kill and restart it."""

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psycopg

BIN = Path(sys.executable).parent / "collector"


class CollectorProcess:
    """One collector process with a fixed client id (so a restart resumes its MQTT session)."""

    def __init__(self, mqtt_url, db_url, client_id="collector-test", share_group="", web_listen="",
                 batch_max=None, batch_age_ms=None, extra_env=None):
        self.env = dict(os.environ, MQTT_URL=mqtt_url, DATABASE_URL=db_url,
                        COLLECTOR_MQTT_CLIENT_ID=client_id, COLLECTOR_MQTT_SHARE_GROUP=share_group,
                        COLLECTOR_WEB_LISTEN=web_listen)
        if batch_max is not None:
            self.env["COLLECTOR_INGEST_BATCH_MAX"] = str(batch_max)
        if batch_age_ms is not None:
            self.env["COLLECTOR_INGEST_BATCH_AGE_MS"] = str(batch_age_ms)
        self.env.update(extra_env or {})
        self.proc = None
        # In the test run's log directory (tests/conftest.py) when there is one, else the system's.
        self.log = tempfile.NamedTemporaryFile(prefix="collector-", suffix=".log", delete=False,
                                               dir=os.environ.get("FIELDWATCH_TEST_LOG_DIR") or None)
        self.starts = 0

    def start(self, wait=True, timeout=30):
        """Start the process; with wait, return once it is subscribed and ingesting."""
        self.starts += 1
        self.log.write(("\n--- start %d ---\n" % self.starts).encode())
        self.log.flush()
        self.proc = subprocess.Popen([str(BIN), "run"], env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        if wait:
            self.wait_for_log("connected to", timeout)
        return self

    def wait_for_log(self, text, timeout=30):
        """Block until `text` appears in this start's log output."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            content = Path(self.log.name).read_text(errors="replace").rsplit("--- start", 1)[-1]
            if text in content:
                return
            if self.proc.poll() is not None:
                raise RuntimeError("collector exited (%s):\n%s" % (self.proc.returncode, content[-3000:]))
            time.sleep(0.05)
        raise TimeoutError("collector did not log %r within %ss:\n%s" % (text, timeout, self.output()[-3000:]))

    def kill(self):
        """SIGKILL: no flush, no clean disconnect."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def terminate(self, timeout=30):
        """SIGTERM and wait; returns the exit status."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            return self.proc.wait(timeout)
        return self.proc.returncode if self.proc else None

    def output(self):
        """Everything the process has logged so far."""
        return Path(self.log.name).read_text(errors="replace")


def count_keys(db_url, table="readings"):
    """(rows, distinct keys) in a table."""
    with psycopg.connect(db_url) as conn:
        return conn.execute("SELECT count(*), count(DISTINCT (device_id, boot, seq)) FROM %s" % table).fetchone()


def wait_rows(db_url, n, table="readings", timeout=60):
    """Wait until the table holds at least n rows; return the count."""
    end = time.monotonic() + timeout
    rows = 0
    while time.monotonic() < end:
        try:
            rows = count_keys(db_url, table)[0]
        except psycopg.OperationalError:
            rows = -1
        if rows >= n:
            return rows
        time.sleep(0.1)
    return rows
