"""tools/sim_board.py: a simulated ESP32 runs the real firmware the way a board boots
it (boot.py, then main.py, with the fake machine and network modules and the board's
100 KB heap), against the harness's private Mosquitto.

- bad arguments get one precise message, never a traceback;
- a board boots, publishes its retained birth status and feature windows, and on
  Ctrl-C its offline status;
- a board whose ADXL345 is wired to the other I2C address crashes at boot; after three
  crash loops boot.py/safemode.py keep the application off (safe mode) so the board
  stays reachable; `safemode.clear()` (what the docs tell you to run with mpremote)
  lets the next boot start the application again.
"""

import json
import os
import signal
import subprocess
import sys
import threading
import time

import paho.mqtt.client as paho
import pytest

from fieldwatch.devservices.micropython import REPO_ROOT, find_micropython

pytestmark = pytest.mark.skipif(find_micropython() is None, reason="no MicroPython Unix port")


def sim_board(*args, env=None, timeout=60):
    full = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m", "fieldwatch.tools.sim_board", *args], cwd=str(REPO_ROOT),
                          env=full, capture_output=True, text=True, timeout=timeout)


def test_sim_board_help_and_bad_arguments(tmp_path):
    r = sim_board("--help")
    assert r.returncode == 0
    for opt in ("--device-id", "--state-dir", "--broker", "--nmea", "--heap", "--source", "--sdo-high"):
        assert opt in r.stdout
    cases = [
        (["--device-id", "Pump 7", "--state-dir", str(tmp_path / "a")], {},
         "sim_board: --device-id 'Pump 7': 1 to 32 of a-z 0-9 - _, starting with a letter or digit"),
        (["--device-id", "esp-01", "--state-dir", str(tmp_path / "b")], {"MQTT_URL": "http://broker:1883"},
         "sim_board: MQTT_URL 'http://broker:1883': expected mqtt://[user:password@]host[:port]"),
        (["--device-id", "esp-01", "--state-dir", str(tmp_path / "c"), "--broker", "mqtt://h:99999"], {},
         "sim_board: MQTT_URL 'mqtt://h:99999': the port must be a number 1..65535"),
        (["--device-id", "esp-01", "--state-dir", "/etc/hostname/flash"], {},
         "sim_board: --state-dir /etc/hostname/flash: cannot create it"),
        (["--device-id", "esp-01", "--state-dir", str(tmp_path / "d"), "--nmea", "nope.log"], {},
         "sim_board: --nmea nope.log: no such file"),
    ]
    r = sim_board("--device-id", "esp-01", "--state-dir", str(tmp_path / "e"), "--heap", "lots")
    assert r.returncode == 2 and "argument --heap: 'lots': a size such as 100K, 2M or 131072" in r.stderr
    for args, env, message in cases:
        r = sim_board(*args, env=env)
        assert r.returncode == 2, (args, r.stdout, r.stderr)
        assert r.stderr.startswith(message), (message, r.stderr)
        assert "Traceback" not in r.stderr


class Watcher:
    """A paho subscriber to one device's topics."""

    def __init__(self, port, dev):
        self.messages = []
        self.lock = threading.Lock()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="watch-%d" % time.time_ns())
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port)
        self.c.subscribe("fieldwatch/v1/%s/#" % dev, 1)
        self.c.loop_start()

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append((msg.topic.rsplit("/", 1)[-1], msg.payload))

    def of(self, kind):
        with self.lock:
            return [p for k, p in self.messages if k == kind]

    def wait(self, test, timeout):
        end = time.time() + timeout
        while time.time() < end and not test():
            time.sleep(0.1)
        return test()

    def stop(self):
        self.c.loop_stop()
        self.c.disconnect()


@pytest.mark.parametrize("rate", [400, 800])
def test_sim_board_runs_the_firmware_and_publishes(fresh_broker, tmp_path, rate):
    # 800 Hz is the config default: its 4.8 KB window only fits a 100 KB heap because
    # main.py holds room for it before the imports fragment the heap
    watch = Watcher(fresh_broker.port, "esp-07")
    state = tmp_path / "flash"
    log = open(tmp_path / "board.log", "w")
    p = subprocess.Popen([sys.executable, "-m", "fieldwatch.tools.sim_board", "--device-id", "esp-07",
                          "--state-dir", str(state), "--rate-hz", str(rate)], cwd=str(REPO_ROOT),
                         env=dict(os.environ, MQTT_URL=fresh_broker.url), stdout=log, stderr=subprocess.STDOUT)
    try:
        assert watch.wait(lambda: len(watch.of("features")) >= 3, 60), \
            (tmp_path / "board.log").read_text()[-3000:]
        p.send_signal(signal.SIGINT)
        assert p.wait(30) == 0
        states = [json.loads(m)["state"] for m in watch.of("status")]
        assert watch.wait(lambda: [json.loads(m)["state"] for m in watch.of("status")][-1:] == ["offline"], 10)
        states = [json.loads(m)["state"] for m in watch.of("status")]
        assert states[0] == "online" and states[-1] == "offline", states
        first = json.loads(watch.of("features")[0])
        assert first["dev"] == "esp-07" and first["boot"] == 1 and first["w"][0]["rate_hz"] == rate
        cfg = json.loads((state / "config.json").read_text())
        assert cfg["device_id"] == "esp-07" and cfg["broker"] == fresh_broker.url
        out = (tmp_path / "board.log").read_text()
        assert "fieldwatch 0.1.0: device esp-07 boot 1" in out and "Traceback" not in out, out[-3000:]
    finally:
        if p.poll() is None:
            p.kill()
        watch.stop()


def test_sim_board_crash_loop_ends_in_safe_mode_until_cleared(tmp_path):
    from fieldwatch.tools.sim_board import Board
    state = tmp_path / "flash"
    log_path = tmp_path / "board.log"
    notes = []
    with open(log_path, "w") as log:
        board = Board("esp-09", state, "mqtt://127.0.0.1:9", chip_address=0x1D, crash_restart_s=0.1,
                      stdout=log, log=notes.append).start()
        try:
            end = time.time() + 60
            while board.poll() and time.time() < end:
                time.sleep(0.1)
        finally:
            board.stop()
    out = log_path.read_text()
    # each boot says what is wrong (no traceback) and resets; the fourth is safe mode
    assert board.resets == 3 and board.crashes == 0, (notes, out[-3000:])
    assert out.count("adxl345: no answer at I2C 0x53 (OSError 121); check SDA pin 21, SCL pin 22") == 3
    assert "Traceback" not in out, out[-3000:]
    assert "SAFE MODE: 3 boots in a row crashed; app not started." in out
    assert 'mpremote exec "import safemode; safemode.clear()" reset' in out
    assert (state / "crashes").read_text() == "4"
    # the fix: clear the guard as the message says, and wire the chip right
    exe = find_micropython()
    r = subprocess.run([exe, "-c", "import safemode; safemode.clear()"], cwd=str(state),
                       env=dict(os.environ, MICROPYPATH=str(REPO_ROOT / "firmware")),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    log_path2 = tmp_path / "board2.log"
    with open(log_path2, "w") as log:
        board = Board("esp-09", state, "mqtt://127.0.0.1:9", stdout=log).start()
        try:
            end = time.time() + 30
            while "fieldwatch 0.1.0" not in log_path2.read_text() and time.time() < end:
                board.poll()
                time.sleep(0.1)
        finally:
            board.stop()
    # boots 1-3 crashed, safe mode started no application (no key was used): boot 4
    assert "fieldwatch 0.1.0: device esp-09 boot 4" in log_path2.read_text()


def test_sim_board_moves_the_nmea_log_to_now(tmp_path):
    # The replayed GPS log is moved to the present (a log from 2020 would set the
    # board's clock to 2020): times and dates shifted, checksums recomputed, the rest
    # of every sentence (position, speed, ...) exactly as recorded.
    import datetime
    from fieldwatch.tools.sim_board import _log_start, shift_nmea
    src = REPO_ROOT / "tests" / "data" / "nmea" / "ublox-neo-m9n-nmea.log"
    start = datetime.datetime(2026, 11, 23, 23, 59, 30, tzinfo=datetime.timezone.utc)
    copies = shift_nmea(src, tmp_path / "now.log", start, 600, 960)
    size = src.stat().st_size
    assert copies == 600 // int(size / 960) + 1
    old = [ln for ln in src.read_text().splitlines() if ln.startswith("$")]
    new = [ln for ln in (tmp_path / "now.log").read_text().splitlines() if ln.startswith("$")]
    assert len(new) == copies * len(old)
    assert _log_start(new) == start
    for ln in new:
        body, _, check = ln[1:].partition("*")
        x = 0
        for c in body.encode():
            x ^= c
        assert "%02X" % x == check[:2], ln
    # positions untouched; the day rolls over at midnight in RMC's date
    gga_old = [ln.split(",")[2:6] for ln in old if ln[3:6] == "GGA"]
    gga_new = [ln.split(",")[2:6] for ln in new if ln[3:6] == "GGA"]
    assert gga_new[:len(gga_old)] == gga_old
    dates = {ln.split(",")[9] for ln in new if ln[3:6] == "RMC"}
    assert {"231126", "241126"} <= dates
