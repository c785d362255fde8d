"""The README's main command: `./run demo` (fieldwatch.tools.demo) brings up the whole system for real.

Runs the demo as a user would from a terminal (its own process group, Ctrl-C to the
group), waits for the status page it prints, checks that the simulated fleet's data
reaches the database through the collector, then presses Ctrl-C and checks that
everything it started is gone.
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from fieldwatch.devservices.ports import free_port, port_is_open

REPO = Path(__file__).resolve().parents[2]


def _get_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        assert r.status == 200
        return json.loads(r.read())


def _processes_mentioning(text):
    """PIDs of live processes whose command line contains text."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry))
    return found


def test_demo_runs_the_fleet_serves_the_page_and_stops_cleanly_on_ctrl_c():
    port = free_port()
    env = dict(os.environ)
    env.pop("MQTT_URL", None)  # the demo starts its own broker and database
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "fieldwatch.tools.demo", "--agents", "2", "--port", str(port)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        url = workdir = None
        service_ports = []
        deadline = time.monotonic() + 90
        while url is None and time.monotonic() < deadline and proc.poll() is None:
            for line in list(lines):
                m = re.search(r"status page: (http://\S+)", line)
                if m:
                    url = m.group(1)
                m = re.search(r"logs in (\S+)\)", line)
                if m:
                    workdir = m.group(1)
                m = re.search(r"private (?:Mosquitto|PostgreSQL) at \S+?:(\d+)", line)
                if m and int(m.group(1)) not in service_ports:
                    service_ports.append(int(m.group(1)))
            time.sleep(0.2)
        assert url == "http://127.0.0.1:%d/" % port, "".join(lines)
        assert workdir and Path(workdir).is_dir()
        assert len(service_ports) == 2 and all(port_is_open("127.0.0.1", p) for p in service_ports), "".join(lines)

        # the page answers, and both simulated agents' feature windows reach the database
        deadline = time.monotonic() + 60
        while True:
            devices = {d["device_id"]: d for d in _get_json(url + "api/v1/devices")["devices"]}
            if {"pi-01", "pi-02"} <= set(devices) and all(devices[d]["windows_1m"] > 0 for d in ("pi-01", "pi-02")):
                break
            assert time.monotonic() < deadline, "simulated agents' data did not arrive: %r" % devices
            time.sleep(1)
        assert all(devices[d]["state"] == "online" for d in ("pi-01", "pi-02"))
        with urllib.request.urlopen(url, timeout=5) as r:
            page = r.read().decode()
        assert "pi-01" in page and "pi-02" in page
        assert _processes_mentioning(workdir), "the agents should be running now"

        # Ctrl-C in a terminal signals the whole foreground process group
        os.killpg(proc.pid, signal.SIGINT)
        assert proc.wait(timeout=60) == 0, "".join(lines)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    reader.join(5)
    out = "".join(lines)
    assert "Traceback" not in out, out
    assert out.rstrip().endswith("[demo] stopped"), out
    assert not port_is_open("127.0.0.1", port)
    assert not any(port_is_open("127.0.0.1", p) for p in service_ports), "broker or database left running"
    assert not _processes_mentioning(workdir), "processes left behind after Ctrl-C"
    assert not Path(workdir).exists()
