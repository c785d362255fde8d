"""The collector's unit under a real systemd, booted as PID 1 in private namespaces (tests/harness/systemd.py).

One sandbox (its private Mosquitto) and one PostgreSQL cluster of the test's own on the
host (the namespace shares the host's network); the unit is installed with the real
`collector install-service` inside the namespace, with a drop-in that only shortens
WatchdogSec= (and binds back a checkout under /tmp, as for the agent). Checks:

  ready     with the database and broker up: `activating` until READY=1, then
            `active (running)` with the collector's STATUS= ("ingesting; ..."), after its
            "ingesting from" line, and the watchdog pings keep it running;
  waiting   the unit restarted with the database down: it stays `activating`, one journal
            line per failed attempt, STATUS= naming the database; once the database is
            started it becomes `active (running)` by itself, without a restart.

Needs root, unshare, nsenter, systemd; skips otherwise, saying what is missing.
"""

import os
import textwrap
import time

import pytest

from fieldwatch.devservices.postgres import PostgresCluster
from tests.harness.systemd import Missing, Sandbox, proc_status, say, under, wait_until

UNIT = "collector.service"
CONFIG = "/etc/fieldwatch/collector.toml"
WATCHDOG_SEC = 3.0


@pytest.fixture(scope="module")
def collector_unit():
    """(Sandbox, PostgresCluster, install-service output): the collector's unit installed and started once."""
    try:
        sb = Sandbox(watchdog_sec=WATCHDOG_SEC)
    except Missing as e:
        pytest.skip("this machine cannot boot the systemd sandbox: %s" % e)
    cluster = PostgresCluster()
    try:
        cluster.start()
        db = cluster.create_database()
        ns = sb.ns
        os.makedirs(ns.path("/etc/fieldwatch"), exist_ok=True)
        with open(ns.path(CONFIG), "w") as f:
            f.write(textwrap.dedent("""\
                # written by tests/e2e/test_collector_systemd.py
                [database]
                url = "%s"

                [mqtt]
                url = "mqtt://127.0.0.1:%d"
                client_id = "collector-systemd-check"

                [web]
                listen = ""
                """ % (db, sb.broker.port)))
        lines = ["[Service]", "WatchdogSec=%g" % WATCHDOG_SEC]
        lines += ["BindReadOnlyPaths=%s" % path for path, _c in sb.exposed if under(path, "/tmp")]
        os.makedirs(ns.path("/etc/systemd/system/%s.d" % UNIT), exist_ok=True)
        with open(ns.path("/etc/systemd/system/%s.d/50-systemd-check.conf" % UNIT), "w") as f:
            f.write("\n".join(lines) + "\n")
        collector = os.path.join(os.path.dirname(sb.edge_agent), "collector")
        out = ns.run(collector, "install-service", "--config", CONFIG, timeout=60)
        say(textwrap.indent(out.rstrip(), "  | "))
        yield sb, cluster, out
    finally:
        cluster.cleanup()
        sb.cleanup()
    assert sb.cgroup_left is None, "could not remove the cgroup %s" % sb.cgroup_left


def _state(ns):
    return ns.show("ActiveState", "SubState", "StatusText", "MainPID", "NRestarts", "Type",
                   "WatchdogTimestampMonotonic", "ActiveEnterTimestampMonotonic", unit=UNIT)


def _journal(ns):
    return ns.journal("-u", UNIT, "-b")


def test_collector_systemd_ready_once_ingesting_with_database_and_broker_up(collector_unit):
    sb, _cluster, out = collector_unit
    ns = sb.ns
    assert "systemctl enable --now --no-block collector.service" in out, out
    seen = []

    def active():
        s = _state(ns)
        seen.append((s["ActiveState"], s["SubState"]))
        return s if (s["ActiveState"], s["SubState"]) == ("active", "running") else None
    s = wait_until("the collector to be active", active, 60, 0.1)
    log = _journal(ns)
    assert s["Type"] == "notify" and s["StatusText"].startswith("ingesting"), "%r\n%s" % (s, log)
    assert "ingesting from" in log and "Traceback" not in log, log
    assert ns.run("systemctl", "is-enabled", UNIT).strip() == "enabled"
    st = proc_status(ns.host_pid(int(s["MainPID"])))
    uid = int(st["Uid"].split()[0])
    assert 61184 <= uid <= 65519, "runs as a dynamic user, not uid %d" % uid
    assert int(st["CapEff"], 16) == 0 and int(st["CapBnd"], 16) == 0 and st["NoNewPrivs"] == "1", st
    # The watchdog: pings from the ingest loop keep it running past WatchdogSec, same process.
    time.sleep(1.5 * WATCHDOG_SEC)
    s2 = _state(ns)
    assert int(s2["WatchdogTimestampMonotonic"]) > int(s["WatchdogTimestampMonotonic"]), "%r\n%s" % (s2, _journal(ns))
    assert (s2["ActiveState"], s2["MainPID"], s2["NRestarts"]) == ("active", s["MainPID"], s["NRestarts"]), s2


def test_collector_systemd_waits_while_the_database_is_down_then_becomes_ready(collector_unit):
    sb, cluster, _out = collector_unit
    ns = sb.ns
    cluster.stop()
    try:
        ns.run("systemctl", "restart", "--no-block", UNIT)
        wait_until("failed attempts in the journal", lambda: _journal(ns).count("waiting for the database") >= 3, 40, 0.2)
        s = _state(ns)
        assert (s["ActiveState"], s["SubState"]) == ("activating", "start"), "%r\n%s" % (s, _journal(ns))
        assert s["StatusText"].startswith("waiting for the database ("), s
        pid = s["MainPID"]
        assert pid not in ("", "0")
    finally:
        cluster.start()
    s = wait_until("the collector to be active after the database came up",
                   lambda: (lambda u: u if (u["ActiveState"], u["SubState"]) == ("active", "running") else None)(
                       _state(ns)), 60, 0.2)
    assert s["MainPID"] == pid, "the same process became ready, no restart was needed: %r" % s
    assert s["StatusText"].startswith("ingesting"), s
    log = _journal(ns)
    assert "answers (attempt" in log and "Traceback" not in log, log
