"""The demo: broker, database, collector with its status page, and a simulated fleet.

    ./run demo                      # what the README shows
    python -m fieldwatch.tools.demo --agents 3 --port 8080

Uses the broker and database named by MQTT_URL and DATABASE_URL when they are
set; otherwise starts a private Mosquitto and a private PostgreSQL cluster of
its own in temporary directories (their data goes when the demo stops). Then
starts the collector and the simulated Raspberry Pi agents (the real edge-agent
code on simulated ADXL345 chips) and ESP32 boards (--boards: the real firmware on
the MicroPython Unix port, tools/sim_board.py), prints the status page URL, and on
Ctrl-C stops everything in reverse order.
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from fieldwatch.devservices.ports import free_port, port_is_open

BIN = Path(sys.executable).parent


def say(msg):
    print("[demo] " + msg, flush=True)


def wait_http(url, timeout, proc=None):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return True
        except OSError:
            pass
        time.sleep(0.3)
    return False


def start_boards(n, workdir, env, procs):
    """Start n simulated ESP32 boards (tools/sim_board.py), esp-01, esp-02, ..."""
    if n <= 0:
        return
    from fieldwatch.tools.sim_board import BoardError, micropython_exe
    try:
        micropython_exe()
    except BoardError as e:
        say("no simulated ESP32 boards: %s" % e)
        return
    for i in range(n):
        dev = "esp-%02d" % (i + 1)
        state = workdir / dev
        state.mkdir()
        board = subprocess.Popen([sys.executable, "-m", "fieldwatch.tools.sim_board", "--device-id", dev,
                                  "--state-dir", str(state / "flash")],
                                 env=dict(env, COLLECTOR_WEB_LISTEN=""), cwd=str(Path(__file__).resolve().parents[1]),
                                 stdout=open(state / "board.log", "wb"), stderr=subprocess.STDOUT)
        procs.append((dev, board))
    say("started %d simulated ESP32 boards (real firmware on MicroPython, logs in %s)" % (n, workdir))


def main(argv=None):
    """Run the demo until Ctrl-C."""
    p = argparse.ArgumentParser(prog="python -m fieldwatch.tools.demo", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--agents", type=int, default=3, help="simulated Raspberry Pi agents (default %(default)s)")
    p.add_argument("--boards", type=int, default=2,
                   help="simulated ESP32 boards: the real firmware on the MicroPython Unix port (default %(default)s)")
    p.add_argument("--port", type=int, default=8080, help="status page port; a free one if taken (default %(default)s)")
    p.add_argument("--seconds", type=float, default=0, help="stop by itself after this many seconds (0: run until Ctrl-C)")
    a = p.parse_args(argv)

    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(1))
    services, procs = [], []
    workdir = Path(tempfile.mkdtemp(prefix="fieldwatch-demo-"))
    try:
        mqtt_url = os.environ.get("MQTT_URL")
        if mqtt_url:
            say("using the broker at %s (MQTT_URL)" % mqtt_url.split("@")[-1])
        else:
            from fieldwatch.devservices.broker import Broker
            say("starting a private Mosquitto")
            b = Broker()
            b.start()
            services.append(b)
            mqtt_url = b.url
            say("private Mosquitto at %s (data in %s)" % (mqtt_url, b.dir))
        db_url = os.environ.get("DATABASE_URL")
        if db_url:
            say("using the database from DATABASE_URL")
        else:
            from fieldwatch.devservices.postgres import PostgresCluster
            say("starting a private PostgreSQL cluster (initdb takes a few seconds)")
            pg = PostgresCluster()
            pg.start()
            services.append(pg)
            db_url = pg.create_database("fieldwatch")
            say("private PostgreSQL at %s (data in %s)" % (db_url, pg.dir))
        port = a.port if not port_is_open("127.0.0.1", a.port) else free_port()
        env = dict(os.environ, MQTT_URL=mqtt_url, DATABASE_URL=db_url, COLLECTOR_WEB_LISTEN="127.0.0.1:%d" % port,
                   COLLECTOR_MQTT_CLIENT_ID="demo-collector")
        say("starting the collector")
        coll = subprocess.Popen([str(BIN / "collector"), "run"], env=env)
        procs.append(("collector", coll))
        url = "http://127.0.0.1:%d/" % port
        if not wait_http(url + "healthz", 60, coll):
            say("the collector did not come up; see its messages above")
            return 1
        agent_bin = BIN / "edge-agent"
        if agent_bin.exists():
            for i in range(a.agents):
                dev = "pi-%02d" % (i + 1)
                state = workdir / dev
                state.mkdir()
                ag = subprocess.Popen([str(agent_bin), "run", "--device-id", dev, "--hardware", "sim",
                                       "--state-dir", str(state)], env=dict(env, COLLECTOR_WEB_LISTEN=""),
                                      stdout=open(state / "agent.log", "wb"), stderr=subprocess.STDOUT)
                procs.append((dev, ag))
            say("started %d simulated Raspberry Pi agents (logs in %s)" % (a.agents, workdir))
        else:
            say("edge-agent is not installed; no simulated agents")
        start_boards(a.boards, workdir, env, procs)
        say("status page: %s   (Ctrl-C stops everything)" % url)
        end = time.monotonic() + a.seconds if a.seconds else None
        while not stopping and (end is None or time.monotonic() < end):
            for name, pr in procs:
                if pr.poll() is not None:
                    say("%s exited with status %s; stopping" % (name, pr.returncode))
                    return 1
            time.sleep(0.5)
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        say("stopping")
        for name, pr in reversed(procs):
            if pr.poll() is None:
                pr.send_signal(signal.SIGTERM)
        for name, pr in reversed(procs):
            try:
                pr.wait(20)
            except subprocess.TimeoutExpired:
                pr.kill()
        for s in reversed(services):
            s.cleanup()
        shutil.rmtree(workdir, ignore_errors=True)
        say("stopped")


if __name__ == "__main__":
    sys.exit(main())
