"""The collector starts in any order (issue 14, part 4): database or broker down at start-up, SIGTERM while waiting.

Each test has its own PostgreSQL cluster and broker, stopped and started by the
test, and runs the real `collector run` as a child process.
"""

import re
import signal
import subprocess
import time

import paho.mqtt.client as paho
import psycopg
import pytest

from fieldwatch.devservices.collector import BIN, CollectorProcess, wait_rows
from fieldwatch.devservices.ports import free_port
from fieldwatch.devservices.postgres import PostgresCluster
from fieldwatch.tools.loadgen import reading_payload
from tests.e2e.web_fleet import get


@pytest.fixture
def own_cluster():
    """A PostgreSQL cluster of this test's own, running, with one database: (cluster, url)."""
    c = PostgresCluster()
    try:
        c.start()
        yield c, c.create_database()
    finally:
        c.cleanup()


def _health(url, path, timeout=20):
    # (status, body) once the web server answers at all.
    end = time.monotonic() + timeout
    while True:
        try:
            return get(url + path)
        except OSError:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


def _wait(what, fn, timeout=30, interval=0.2):
    end = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < end, "timed out waiting for " + what
        time.sleep(interval)


def _publish_reading(broker_url, device, seq):
    port = int(broker_url.rsplit(":", 1)[1])
    c = paho.Client(callback_api_version=paho.CallbackAPIVersion.VERSION2, client_id="startup-pub-%d" % seq,
                    protocol=paho.MQTTv5)
    c.connect("127.0.0.1", port)
    c.loop_start()
    try:
        info = c.publish("fieldwatch/v1/%s/telemetry/readings" % device,
                         reading_payload(device, 1, seq, int(time.time() * 1000)), qos=1)
        info.wait_for_publish(10)
    finally:
        c.loop_stop()
        c.disconnect()


def _waiting_lines(output, what):
    return [line for line in output.splitlines() if "waiting for the %s" % what in line]


def test_collector_startup_waits_for_a_database_that_is_down_then_migrates_and_ingests(fresh_broker, own_cluster):
    cluster, db = own_cluster
    cluster.stop()
    port = free_port()
    web = "http://127.0.0.1:%d" % port
    c = CollectorProcess(fresh_broker.url, db, client_id="startup-db-%d" % port, web_listen="127.0.0.1:%d" % port)
    c.start(wait=False)
    try:
        assert _health(web, "/healthz") == (200, {"ok": True}), "alive while waiting"
        status, body = _health(web, "/readyz")
        assert status == 503 and body["ready"] is False and body["waiting_for"].startswith("the database ("), body
        _wait("three failed attempts logged", lambda: len(_waiting_lines(c.output(), "database")) >= 3)
        assert c.proc.poll() is None, "the collector gave up:\n" + c.output()
        out = c.output()
        lines = _waiting_lines(out, "database")
        assert "Traceback" not in out, out
        assert all(re.search(r"waiting for the database postgresql://\S+: .+; attempt \d+, next in [\d.]+ s$", line)
                   for line in lines), lines
        assert "connection" in lines[0].lower(), "the reason is named: " + lines[0]
        delays = [float(re.search(r"next in ([\d.]+) s", line).group(1)) for line in lines]
        assert delays[1] > delays[0], "the delays grow (backoff): %s" % delays

        cluster.start()
        c.wait_for_log("connected to", 40)
        status, body = _wait("ready", lambda: (lambda r: r if r[0] == 200 else None)(_health(web, "/readyz")))
        assert body == {"ready": True, "database": "ok", "broker": "ok", "ingest": "ok"}, body
        assert re.search(r"database \S+ answers \(attempt \d+\)", c.output()), c.output()[-2000:]
        _publish_reading(fresh_broker.url, "startup-01", 0)
        assert wait_rows(db, 1, timeout=30) == 1, "migrated and ingesting:\n" + c.output()[-3000:]
    finally:
        assert c.terminate() == 0


def test_collector_startup_logs_each_attempt_at_an_unreachable_broker(fresh_broker, own_cluster):
    _cluster, db = own_cluster
    fresh_broker.stop()
    port = free_port()
    web = "http://127.0.0.1:%d" % port
    c = CollectorProcess(fresh_broker.url, db, client_id="startup-broker-%d" % port, web_listen="127.0.0.1:%d" % port)
    c.start(wait=False)
    try:
        _wait("two failed attempts at the broker", lambda: len(_waiting_lines(c.output(), "broker")) >= 2)
        lines = _waiting_lines(c.output(), "broker")
        assert all(("waiting for the broker 127.0.0.1:%d:" % fresh_broker.port) in line and "refused" in line.lower()
                   for line in lines), lines
        assert "Traceback" not in c.output()
        status, body = _health(web, "/readyz")
        assert status == 503 and body["database"] == "ok" and body["broker"] == "not connected", body
        assert body["waiting_for"].startswith("the broker ("), body
        with psycopg.connect(db) as conn:
            assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] >= 1, "migrated meanwhile"

        fresh_broker.start()
        c.wait_for_log("connected to", 40)
        _wait("ready", lambda: _health(web, "/readyz")[0] == 200)
        _publish_reading(fresh_broker.url, "startup-02", 0)
        assert wait_rows(db, 1, timeout=30) == 1, c.output()[-3000:]
        # Later reconnects (paho's) say why they fail, too.
        fresh_broker.stop()
        _wait("a failed reconnect logged", lambda: "broker 127.0.0.1:%d unreachable: " % fresh_broker.port in c.output())
        line = [x for x in c.output().splitlines() if "unreachable: " in x][0]
        assert "refused" in line.lower() and line.endswith("; retrying"), line
    finally:
        assert c.terminate() == 0


def test_collector_startup_sigterm_while_waiting_exits_cleanly(fresh_broker, own_cluster):
    cluster, db = own_cluster
    cluster.stop()
    c = CollectorProcess(fresh_broker.url, db, client_id="startup-term")
    c.start(wait=False)
    _wait("a failed attempt", lambda: _waiting_lines(c.output(), "database"))
    t0 = time.monotonic()
    c.proc.send_signal(signal.SIGTERM)
    assert c.proc.wait(10) == 0, c.output()
    assert time.monotonic() - t0 < 3, "SIGTERM ends the wait at once"
    assert "stopped before start-up finished" in c.output() and "Traceback" not in c.output()
    cluster.start()
    with psycopg.connect(db) as conn:
        assert conn.execute("SELECT to_regclass('schema_migrations')").fetchone() == (None,), "nothing migrated"


def test_collector_startup_a_storage_the_server_cannot_give_is_a_clear_failure_not_a_wait(fresh_broker, own_cluster):
    _cluster, db = own_cluster
    c = CollectorProcess(fresh_broker.url, db, client_id="startup-storage",
                         extra_env={"COLLECTOR_DATABASE_STORAGE": "timescaledb"})
    c.start(wait=False)
    assert c.proc.wait(30) == 1
    out = c.output()
    assert "database.storage = timescaledb, but TimescaleDB is not installed on this PostgreSQL server" in out, out
    assert "cannot reach the database" not in out and "waiting for" not in out and "Traceback" not in out
    r = subprocess.run([str(BIN), "migrate"], env=c.env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "TimescaleDB is not installed" in r.stderr and "cannot reach" not in r.stderr
    c.env["COLLECTOR_DATABASE_STORAGE"] = "partitioned"
    r = subprocess.run([str(BIN), "migrate"], env=c.env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "storage: partitioned (database.storage = partitioned)" in r.stderr
