"""`fleetctl` (the console script) against the real collector, broker and database, with a real simulated agent.

The agent is `edge-agent run --hardware sim` (the real agent code on the simulated
ADXL345): fleetctl sends it a command through the collector's API, the collector
publishes it over MQTT, the agent carries it out and answers on its result topic,
and the result comes back through the database to fleetctl.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fieldwatch.devservices.broker import Broker
from fieldwatch.devservices.collector import CollectorProcess
from fieldwatch.devservices.ports import free_port
from tests.e2e.web_fleet import get

BIN = Path(sys.executable).parent
TOKEN = "fleetctl-test-token"
DEV = "pi-07"


def fleetctl(url, *args, token=TOKEN, timeout=60):
    """Run the installed console script; returns CompletedProcess with text output."""
    cmd = [str(BIN / "fleetctl"), "--url", url] + (["--token", token] if token else []) + list(args)
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLEETCTL_")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def site(pg_cluster):
    """(collector URL, agent state dir): a private broker and database, the collector, one simulated agent online."""
    broker = Broker()
    broker.start()
    db = pg_cluster.create_database()
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    c = CollectorProcess(broker.url, db, client_id="fleetctl-test-%d" % port, web_listen="127.0.0.1:%d" % port,
                         extra_env={"COLLECTOR_WEB_API_TOKEN": TOKEN}).start()
    state = Path(tempfile.mkdtemp(prefix="fleetctl-agent-"))
    agent = subprocess.Popen([str(BIN / "edge-agent"), "run", "--device-id", DEV, "--hardware", "sim",
                              "--state-dir", str(state)], env=dict(os.environ, MQTT_URL=broker.url),
                             stdout=open(state / "agent.log", "wb"), stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            status, body = get(url + "/api/v1/devices/" + DEV)
            if status == 200 and body["device"]["online"] and body["device"]["windows_1m"] > 0:
                break
            assert agent.poll() is None, (state / "agent.log").read_text()[-3000:]
            time.sleep(0.3)
        else:
            raise AssertionError("agent never came online: " + (state / "agent.log").read_text()[-3000:])
        yield url, state
    finally:
        if agent.poll() is None:
            agent.terminate()
            try:
                agent.wait(20)
            except subprocess.TimeoutExpired:
                agent.kill()
        c.terminate()
        broker.cleanup()
        pg_cluster.drop_database(db)
        shutil.rmtree(state, ignore_errors=True)


def test_fleetctl_sends_a_command_the_simulated_agent_carries_out_and_the_result_comes_back(site):
    url, state = site
    r = fleetctl(url, "send", DEV, "set_rate", "hz=400", "--wait", "30")
    assert r.returncode == 0, (r.stdout, r.stderr, (state / "agent.log").read_text()[-2000:])
    assert "sent set_rate" in r.stdout and 'ok: {"hz": 400}' in r.stdout
    # the command log holds it with the agent's result, and the device page lists it
    r = fleetctl(url, "--json", "device", DEV)
    assert r.returncode == 0, r.stderr
    cmds = json.loads(r.stdout)["commands"]
    assert cmds[0]["cmd"] == "set_rate" and cmds[0]["state"] == "ok" and cmds[0]["detail"] == {"hz": 400}
    assert cmds[0]["result_boot"] is not None, "the result is a record of the device, with its key"
    # a command the agent refuses comes back as a failure with the agent's reason
    r = fleetctl(url, "send", DEV, "sleep", "s=1", "--wait", "30")
    assert r.returncode == 0, (r.stdout, r.stderr)
    r = fleetctl(url, "send", DEV, "wake", "--wait", "30")
    assert r.returncode == 0, (r.stdout, r.stderr)


def test_fleetctl_lists_shows_tails_and_reads_quarantine(site):
    url, _ = site
    r = fleetctl(url, "devices")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].split()[:2] == ["DEVICE", "STATE"]
    row = next(line for line in lines if line.startswith(DEV))
    assert row.split()[1] == "online"
    listed = json.loads(fleetctl(url, "--json", "devices").stdout)["devices"]
    assert [d["device_id"] for d in listed] == [DEV]
    r = fleetctl(url, "device", DEV)
    assert r.returncode == 0 and "delivery gaps" in r.stdout
    r = fleetctl(url, "--json", "tail", DEV, "--kind", "features", "--since", "10m", "--count", "2")
    assert r.returncode == 0, r.stderr
    windows = [json.loads(line) for line in r.stdout.splitlines()]
    assert len(windows) == 2 and all(w["x_rms"] is not None for w in windows)
    r = fleetctl(url, "quarantine")
    assert r.returncode == 0 and "Nothing rejected." in r.stdout


def test_fleetctl_errors_say_what_to_do_without_a_traceback(site):
    url, _ = site
    closed = "http://127.0.0.1:%d" % free_port()
    cases = [
        ((closed, "devices"), {}, 1, "cannot reach the collector at " + closed),
        ((url, "send", DEV, "set_rate", "hz=800"), {"token": None}, 1, "--token or FLEETCTL_TOKEN"),
        ((url, "send", DEV, "set_rate", "hz=800"), {"token": "wrong"}, 1, "token is not valid"),
        ((url, "send", DEV, "set_rate", "hz=7"), {}, 1, "bad_argument"),
        ((url, "send", DEV, "set_rate", "800"), {}, 2, "arguments are key=value"),
        ((url, "device", "pump-404"), {}, 1, "no device 'pump-404'"),
        ((url, "tail", DEV, "--since", "yesterday", "--once"), {}, 1, "from must be an ISO 8601 time"),
        ((url, "send", DEV, "format_flash"), {}, 2, "invalid choice"),
    ]
    for args, kw, code, message in cases:
        r = fleetctl(*args, **kw)
        assert r.returncode == code, (args, r.stdout, r.stderr)
        assert message in r.stderr, (args, r.stderr)
        assert "Traceback" not in r.stderr + r.stdout
