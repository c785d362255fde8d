"""The edge agent as a systemd service: sd_notify over a real socket, install-service, a unit systemd accepts.

The notification tests stand in for systemd with a real AF_UNIX datagram socket
and run the real `edge-agent run --hardware sim` process against a private broker.
"""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import pytest

from edge_agent import config as agent_config
from edge_agent import service
from fieldwatch import sdnotify
from edge_agent.outbox import read_records
from fieldwatch.wire import topics

EDGE_AGENT = Path(sys.executable).parent / "edge-agent"
WATCHDOG_USEC = 400000   # systemd would say WatchdogSec=0.4: pings every 0.2 s


def receive(sock, timeout):
    """The next notification as {VARIABLE: value}, or None after timeout seconds."""
    sock.settimeout(timeout)
    try:
        data = sock.recv(4096)
    except socket.timeout:
        return None
    return dict(line.split("=", 1) for line in data.decode().split("\n") if "=" in line)


def wait_for(sock, variable, timeout, seen):
    """Receive until a message sets `variable`; every message is appended to `seen` as (time, msg)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        msg = receive(sock, max(0.01, end - time.monotonic()))
        if msg is None:
            break
        seen.append((time.monotonic(), msg))
        if variable in msg:
            return msg
    return None


@pytest.fixture
def notify_socket():
    """A bound abstract AF_UNIX datagram socket, as systemd's: (socket, '@name' for $NOTIFY_SOCKET)."""
    name = "fw-notify-test-%s" % uuid.uuid4().hex
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    try:
        yield sock, "@" + name
    finally:
        sock.close()


def start_agent(tmp_path, mqtt_url, env, args=()):
    log = open(tmp_path / "agent.log", "wb")
    proc = subprocess.Popen(
        [str(EDGE_AGENT), "run", "--device-id", "svc-test", "--hardware", "sim", "--state-dir", str(tmp_path / "state"),
         *args],
        env=dict(os.environ, MQTT_URL=mqtt_url, EDGE_AGENT_OUTBOX_EXIT_DRAIN_S="1", **env),
        stdout=log, stderr=subprocess.STDOUT)
    return proc, tmp_path / "agent.log"


def test_service_notifies_ready_then_watchdog_then_stopping(fresh_broker, notify_socket, tmp_path):
    sock, address = notify_socket
    proc, log = start_agent(tmp_path, fresh_broker.url, {"NOTIFY_SOCKET": address, "WATCHDOG_USEC": str(WATCHDOG_USEC)})
    try:
        seen = []
        ready = wait_for(sock, "READY", 30, seen)
        assert ready is not None, "no READY=1 within 30 s:\n" + log.read_text()
        assert ready["READY"] == "1"
        assert not [m for _, m in seen[:-1]], "something was sent before READY=1: %r" % seen
        # Periodic pings, from a loop that reaches the broker (the STATUS text says so).
        pings = []
        while len(pings) < 6:
            msg = wait_for(sock, "WATCHDOG", 10, pings)
            assert msg is not None, "WATCHDOG=1 stopped after %d pings:\n%s" % (len(pings), log.read_text())
            assert msg["WATCHDOG"] == "1"
        pings = [(t, m) for t, m in pings if "WATCHDOG" in m]
        assert any("broker connected" in m.get("STATUS", "") for _, m in pings), pings
        span = pings[-1][0] - pings[0][0]
        half = WATCHDOG_USEC / 2e6
        # Never more often than every half interval (a few ms of slack for delivery jitter).
        assert len(pings) - 1 <= span / half + 1, (len(pings), span)
        proc.send_signal(signal.SIGTERM)
        stopping = wait_for(sock, "STOPPING", 15, seen)
        assert stopping is not None and stopping["STOPPING"] == "1", log.read_text()
        assert proc.wait(30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_notifier_path_socket_and_foreign_watchdog_pid(tmp_path):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    try:
        t = [100.0]
        n = sdnotify.Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000"}, clock=lambda: t[0])
        assert n.heartbeat("starting") and receive(sock, 5) == {"READY": "1", "STATUS": "starting"}
        assert not n.heartbeat()            # not yet half the interval
        t[0] += 1.0
        assert n.heartbeat() and receive(sock, 5) == {"WATCHDOG": "1"}
        assert n.stopping() and receive(sock, 5) == {"STOPPING": "1"}
        # A watchdog meant for another process is not ours to feed; READY still goes out.
        other = sdnotify.Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "2000000",
                                   "WATCHDOG_PID": str(os.getpid() + 1)}, clock=lambda: t[0])
        assert other.watchdog_s is None
        assert other.heartbeat() and receive(sock, 5) == {"READY": "1"}
        t[0] += 10
        assert not other.heartbeat() and receive(sock, 0.2) is None
    finally:
        sock.close()
    # Outside systemd, or with a socket that is gone: no-ops, never an exception.
    assert not sdnotify.Notifier({}).heartbeat()
    gone = sdnotify.Notifier({"NOTIFY_SOCKET": path + ".missing"})
    assert not gone.ready() and not gone.stopping()
    assert sdnotify.socket_address("@x") == "\0x" and sdnotify.socket_address("vsock:2:9") is None


def run_install(*args):
    return subprocess.run([str(EDGE_AGENT), "install-service", *args], capture_output=True, text=True, timeout=60)


def test_install_service_dry_run_changes_nothing(tmp_path):
    config = tmp_path / "etc" / "config.toml"
    before = os.path.exists(os.path.join(service.UNIT_DIR, service.UNIT_NAME))
    r = run_install("--dry-run", "--config", str(config))
    assert r.returncode == 0, r.stderr
    assert "Traceback" not in r.stderr
    assert "ExecStart=%s run --config %s --state-dir ${STATE_DIRECTORY}" % (EDGE_AGENT, config) in r.stdout
    assert "would write a default config %s" % config in r.stdout
    # What it says about systemctl depends on the machine, and is exactly what systemctl_plan says for it.
    _, lines = service.systemctl_plan(service.UNIT_DIR, True, shutil.which("systemctl"),
                                      os.path.isdir("/run/systemd/system"))
    assert r.stdout.rstrip("\n").splitlines()[-len(lines):] == lines
    assert not config.exists() and not config.parent.exists()
    assert os.path.exists(os.path.join(service.UNIT_DIR, service.UNIT_NAME)) == before


def test_install_service_writes_a_unit_systemd_accepts(tmp_path):
    units, config = tmp_path / "units", tmp_path / "etc" / "config.toml"
    r = run_install("--config", str(config), "--unit-dir", str(units))
    assert r.returncode == 0, r.stderr
    assert "not running systemctl" in r.stdout
    unit = (units / service.UNIT_NAME).read_text()
    for line in ("Type=notify", "WatchdogSec=30", "Restart=always", "StateDirectory=edge-agent",
                 "ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes", "DynamicUser=yes",
                 "DeviceAllow=char-i2c rw", "DeviceAllow=char-gpiochip rw",
                 "ExecStart=%s run --config %s --state-dir ${STATE_DIRECTORY}" % (EDGE_AGENT, config)):
        assert line in unit.splitlines(), line
    # The default config is one the service can run with.
    conf = agent_config.load(str(config), environ={})
    assert conf["device"]["id"] == service.default_device_id()
    # A second run keeps the config as it is.
    config.write_text(config.read_text().replace('hardware = "real"', 'hardware = "sim"'))
    r = run_install("--config", str(config), "--unit-dir", str(units))
    assert r.returncode == 0 and "keeping the existing config" in r.stdout
    assert agent_config.load(str(config), environ={})["sensor"]["hardware"] == "sim"
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the unit was written but not verified")
    v = subprocess.run([analyze, "verify", str(units / service.UNIT_NAME)], capture_output=True, text=True,
                       timeout=60)
    # verify exits 0 even for unknown keys and bad values: it must also say nothing about our unit.
    assert v.returncode == 0 and service.UNIT_NAME not in v.stdout + v.stderr, v.stdout + v.stderr
    # systemd's own hardening score (systemd >= 250 can rate a unit file offline): "OK" or better.
    sec = subprocess.run([analyze, "security", "--offline=yes", str(units / service.UNIT_NAME)],
                         capture_output=True, text=True, timeout=60)
    if "--offline" in sec.stderr or "Unknown option" in sec.stderr:
        pytest.skip("this systemd-analyze cannot rate a unit file offline: the score is not checked")
    level = re.search(r"Overall exposure level for %s: ([0-9.]+) (\w+)" % re.escape(service.UNIT_NAME),
                      sec.stdout + sec.stderr)
    assert level is not None, sec.stdout + sec.stderr
    assert level.group(2) in ("PERFECT", "SAFE", "OK"), level.group(0)


def test_install_service_user_mistakes_get_precise_messages(tmp_path):
    units = tmp_path / "units"
    r = run_install("--user", "no-such-user-xyz", "--unit-dir", str(units), "--config", str(tmp_path / "c.toml"))
    assert r.returncode == 1
    assert "user 'no-such-user-xyz' does not exist" in r.stderr and "Traceback" not in r.stderr
    assert not units.exists()
    bad = tmp_path / "bad.toml"
    bad.write_text('[device]\nid = "Bad Id!"\n')
    r = run_install("--unit-dir", str(units), "--config", str(bad))
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "device.id" in r.stderr and "not usable by the service" in r.stderr
    r = run_install("--user", "root", "--unit-dir", str(units), "--config", str(tmp_path / "c.toml"))
    assert r.returncode == 0, r.stderr
    assert "User=root" in (units / service.UNIT_NAME).read_text().splitlines()


def _outbox_logs(state_dir):
    return [r[4] for r in read_records(os.path.join(state_dir, "outbox.db"), "log")]


def test_logs_are_shipped_at_a_bounded_rate(fresh_broker, tmp_path):
    """A flood of bad commands (each answered by a log record) ships at most the burst plus the rate."""
    rate, burst, flood = 1.0, 5, 60
    proc, log = start_agent(tmp_path, fresh_broker.url, {
        "EDGE_AGENT_LOGS_SHIP_PER_S": str(rate), "EDGE_AGENT_LOGS_SHIP_BURST": str(burst),
        "EDGE_AGENT_STATUS_INTERVAL_S": "1"}, args=["--log-format", "json"])
    statuses = []
    c = paho.Client(callback_api_version=paho.CallbackAPIVersion.VERSION2, client_id="log-flood", protocol=paho.MQTTv5)
    c.on_message = lambda client, userdata, msg: statuses.append(json.loads(msg.payload))
    c.connect(fresh_broker.host, fresh_broker.port)
    c.subscribe(topics.topic("svc-test", "status"), qos=1)
    c.loop_start()
    try:
        deadline = time.monotonic() + 30
        while not any(s["state"] == "online" for s in statuses):
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.05)
        t0 = time.monotonic()
        for i in range(flood):   # not JSON: no id to answer, so each one becomes a log record
            c.publish(topics.topic("svc-test", "cmd"), b"not a command %d" % i, qos=1).wait_for_publish(5)

        def health():
            return statuses[-1]["health"] if statuses else {}
        while health().get("cmd_errors", 0) < flood:
            assert time.monotonic() < deadline + 30 and proc.poll() is None, (health(), log.read_text())
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
        rejected = [text for level, text in _outbox_logs(str(tmp_path / "state")) if text.startswith("command rejected")]
        suppressed = health()["logs_suppressed"]
        assert len(rejected) + suppressed == flood          # every one either shipped or counted
        assert len(rejected) <= burst + rate * elapsed + 1, (len(rejected), elapsed)
        assert suppressed > 0
        # Once tokens are back, the next shipped record is preceded by the count held back.
        time.sleep(1.5 / rate)
        c.publish(topics.topic("svc-test", "cmd"), b"one more", qos=1).wait_for_publish(5)
        deadline = time.monotonic() + 20
        while True:
            texts = [text for level, text in _outbox_logs(str(tmp_path / "state"))]
            summaries = [t for t in texts if "log messages not shipped" in t]
            if summaries:
                break
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.05)
        assert len(summaries) == 1 and int(summaries[0].split()[0]) == suppressed, summaries
        assert texts[texts.index(summaries[-1]) + 1].startswith("command rejected")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, log.read_text()
        # Locally every one was logged, one JSON object per line (--log-format json).
        lines = [json.loads(line) for line in log.read_text().splitlines()]
        assert all(set(line) >= {"ts", "level", "logger", "msg"} for line in lines)
        assert sum(line["msg"].startswith("command rejected") for line in lines) == flood + 1
    finally:
        c.loop_stop()
        c.disconnect()
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_install_service_systemctl_plan():
    steps = "systemctl daemon-reload && systemctl enable --now edge-agent.service"
    assert service.systemctl_plan(service.UNIT_DIR, False, "/usr/bin/systemctl", True) == (True, [])
    assert service.systemctl_plan(service.UNIT_DIR, True, "/usr/bin/systemctl", True) == (False, [
        "would run: systemctl daemon-reload", "would run: systemctl enable --now edge-agent.service"])
    run, lines = service.systemctl_plan(service.UNIT_DIR, False, None, True)
    assert not run and lines == ["no systemctl here: the unit is written but not enabled or started; "
                                 "on a systemd machine run: " + steps]
    run, lines = service.systemctl_plan(service.UNIT_DIR, True, "/usr/bin/systemctl", False)
    assert not run and lines == ["PID 1 is not systemd: the unit would be written but not enabled or started; "
                                 "on a systemd machine run: " + steps]
    run, lines = service.systemctl_plan("/tmp/units", False, "/usr/bin/systemctl", True)
    assert not run and "not running systemctl" in lines[0]


def test_protect_home_follows_the_interpreter(tmp_path):
    """A venv whose python leads under /root (a pyenv) needs ProtectHome=read-only: with yes, 203/EXEC."""
    script = tmp_path / "edge-agent"
    config = tmp_path / "config.toml"
    script.write_text("#!/root/.pyenv/versions/3.11.7/bin/python3.11\n")
    unit, notes = service.render_unit(service.unit_template(), str(script), str(config), group_exists=lambda g: True)
    assert "ProtectHome=read-only" in unit.splitlines()
    assert any("/root/.pyenv/versions/3.11.7/bin/python3.11 lives under /home, /root, /run/user" in n for n in notes)
    # A symlinked interpreter counts where it leads.
    (tmp_path / "python").symlink_to("/root/.pyenv/versions/3.11.7/bin/python3.11")
    script.write_text("#!%s\n" % (tmp_path / "python"))
    assert "/root/.pyenv/versions/3.11.7/bin/python3.11" in service.run_paths(str(script))
    assert "ProtectHome=read-only" in service.render_unit(service.unit_template(), str(script), str(config))[0]
    script.write_text("#!/usr/bin/python3\n")
    unit, notes = service.render_unit(service.unit_template(), str(script), str(config), group_exists=lambda g: True)
    # (tmp_path is under /tmp, which earns a note of its own: see the next test)
    assert "ProtectHome=yes" in unit.splitlines() and not any("ProtectHome" in n for n in notes), notes


def test_install_from_tmp_is_named(tmp_path):
    """PrivateTmp=yes hides /tmp from the service: an agent or config there would fail to start, and install says so."""
    config = "/etc/edge-agent/config.toml"
    script = tmp_path / "edge-agent"            # pytest's tmp_path is under /tmp
    script.write_text("#!/usr/bin/python3\n")
    assert str(script).startswith("/tmp/")
    unit, notes = service.render_unit(service.unit_template(), str(script), config, group_exists=lambda g: True)
    assert "PrivateTmp=yes" in unit.splitlines()
    assert any(n.startswith("%s is under /tmp or /var/tmp, which PrivateTmp=yes replaces" % script) for n in notes), notes
    unit, notes = service.render_unit(service.unit_template(), "/opt/fieldwatch/bin/edge-agent", "/var/tmp/agent.toml",
                                      group_exists=lambda g: True)
    assert any(n.startswith("/var/tmp/agent.toml is under /tmp or /var/tmp") for n in notes), notes
    unit, notes = service.render_unit(service.unit_template(), "/opt/fieldwatch/bin/edge-agent", config,
                                      group_exists=lambda g: True)
    assert not notes, notes


def test_install_names_what_the_dynamic_user_cannot_reach(tmp_path):
    """A config (or the agent's Python) below a 0700 directory: the dynamic service user could not read it."""
    base = Path(tempfile.mkdtemp(prefix="fw-closed-", dir="/tmp"))   # (tmp_path is below a 0700 directory)
    try:
        base.chmod(0o755)
        closed = base / "closed"
        closed.mkdir()
        closed.chmod(0o700)
        printed = []
        service.install(config_path=str(closed / "config.toml"), unit_dir=str(tmp_path / "units"), dry_run=True,
                        out=printed.append, executable="/usr/bin/true")
        assert any(line.startswith("note: the dynamic service user cannot enter %s (on the way to %s)"
                                   % (closed, closed / "config.toml")) for line in printed), printed
        printed.clear()
        closed.chmod(0o755)
        service.install(config_path=str(closed / "config.toml"), unit_dir=str(tmp_path / "units"), dry_run=True,
                        out=printed.append, executable="/usr/bin/true")
        assert not any("cannot enter" in line for line in printed), printed
    finally:
        shutil.rmtree(base)



def wait_for_text(path, text, timeout):
    """Wait until the file at path holds `text`; True if it did within timeout seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and text in path.read_text(errors="replace"):
            return True
        time.sleep(0.1)
    return False


def test_second_agent_on_one_state_dir_is_refused_until_the_first_dies(fresh_broker, tmp_path):
    state = tmp_path / "state"

    def agent(name):
        with open(tmp_path / name, "wb") as log:
            return subprocess.Popen(
                [str(EDGE_AGENT), "run", "--device-id", "svc-test", "--hardware", "sim", "--state-dir", str(state)],
                env=dict(os.environ, MQTT_URL=fresh_broker.url, EDGE_AGENT_OUTBOX_EXIT_DRAIN_S="1"),
                stdout=log, stderr=subprocess.STDOUT), tmp_path / name

    procs = []
    try:
        first, first_log = agent("first.log")
        procs.append(first)
        assert wait_for_text(first_log, "connected to", 30), first_log.read_text()
        boot = int((state / "boot").read_text())
        second, second_log = agent("second.log")
        procs.append(second)
        try:
            rc = second.wait(20)
        except subprocess.TimeoutExpired:
            rc = None
        text = second_log.read_text()
        assert rc == 1, "the second agent was not refused (exit status %r):\n%s" % (rc, text)
        lines = [line for line in text.splitlines() if line.strip()]
        assert len(lines) == 1, text
        assert "already uses the state directory %s" % state in lines[0], text
        assert "PID %d" % first.pid in lines[0], text
        # The first agent kept running and connected on its boot: never kicked off, its counter not bumped.
        time.sleep(1.0)
        assert first.poll() is None, first_log.read_text()
        assert int((state / "boot").read_text()) == boot
        log = first_log.read_text()
        assert log.count("connected to") == 1 and "disconnected from" not in log, log
        # SIGKILL leaves no stale lock: the next agent starts at once, on the next boot.
        first.kill()
        first.wait(10)
        third, third_log = agent("third.log")
        procs.append(third)
        assert wait_for_text(third_log, "connected to", 30), third_log.read_text()
        assert third.poll() is None, third_log.read_text()
        assert int((state / "boot").read_text()) == boot + 1
        third.send_signal(signal.SIGTERM)
        assert third.wait(30) == 0, third_log.read_text()
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(10)
