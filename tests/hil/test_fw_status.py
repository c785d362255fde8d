"""The ESP32's retained status stays live (issue 15, part 2): the real firmware
(firmware/app.py, compiled with mpy-cross) on the MicroPython Unix port with the
board's 100 KB heap, the ADXL345 model in a chip host, against a real Mosquitto.

- after the birth at connect, the board republishes its retained status every
  `status_every_s`, each with the next seq it will assign (larger as windows are
  stored), the buffer's depth, oldest age and drops, and health (heap, FIFO overruns);
- a subscriber arriving later gets the latest of them, not the birth.
"""

import json
import threading
import time

import paho.mqtt.client as paho

from fieldwatch.tools.sim_board import ChipHost

HEAP = "100K"
DEV = "fw-status"

# The app as main.py builds it, looping until the file argv[3] exists.
APP = r"""
import sys, os, time, gc
import config
cfg, problems = config.validate({"device_id": "fw-status", "wifi_ssid": "lab", "broker": sys.argv[1],
    "rate_hz": 400, "window_s": 1, "wave_every_s": 0, "ntp_host": None, "status_every_s": 2})
assert not problems, problems
del config
del sys.modules["config"]
gc.collect()
import app
a = app.App(cfg, sys.argv[2])
def exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False
while not exists(sys.argv[3]):
    a.step()
    time.sleep_ms(5)
print("STOPPED next seq", a.keys.seq, "connects", a.link.connects)
"""


class StatusWatcher:
    """A paho subscriber to one device's status topic: (receipt time, retain flag, message)."""

    def __init__(self, port, dev=DEV):
        self.got = []
        self.lock = threading.Lock()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="status-%d" % time.time_ns())
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port)
        self.c.subscribe("fieldwatch/v1/%s/status" % dev, 1)
        self.c.loop_start()

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.got.append((time.monotonic(), msg.retain, json.loads(msg.payload)))

    def statuses(self):
        with self.lock:
            return list(self.got)

    def wait(self, n, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end and len(self.statuses()) < n:
            time.sleep(0.05)
        return self.statuses()

    def stop(self):
        self.c.loop_stop()
        self.c.disconnect()


def test_fw_status_republished_every_period_with_the_next_seq(micropython, fw_path, fresh_broker, tmp_path):
    chip = ChipHost()
    (tmp_path / "flash").mkdir()
    stop = tmp_path / "stop"
    watch = StatusWatcher(fresh_broker.port)
    log = open(tmp_path / "device.log", "w")
    dev = micropython.start(APP, args=[fresh_broker.url, str(tmp_path / "flash") + "/", str(stop)],
                            heapsize=HEAP, path=fw_path, cwd=str(tmp_path),
                            env={"FW_I2C": chip.address}, stdout=log)
    try:
        got = watch.wait(4, 30)
        assert len(got) >= 4, (got, (tmp_path / "device.log").read_text()[-3000:])
        # a subscriber that comes now gets the latest status, retained
        late = StatusWatcher(fresh_broker.port)
        retained = late.wait(1, 10)
        late.stop()
        stop.write_text("stop")
        assert dev.wait(30) == 0, (tmp_path / "device.log").read_text()[-3000:]
    finally:
        if dev.poll() is None:
            dev.kill()
        watch.stop()
        chip.close()
    out = (tmp_path / "device.log").read_text()
    assert "Traceback" not in out and "connects 1" in out, out[-3000:]
    times = [t for t, _, _ in got]
    msgs = [m for _, _, m in got]
    assert [m["state"] for m in msgs[:4]] == ["online"] * 4
    seqs = [m["seq"] for m in msgs[:4]]
    # the birth, then one every 2 s: each with the next seq, which grows with the
    # windows stored (one a second at 400 Hz)
    assert seqs[0] < seqs[1] < seqs[2] < seqs[3], seqs
    gaps = [b - a for a, b in zip(times[:4], times[1:4])]
    assert all(1.5 <= g <= 3.5 for g in gaps), gaps
    for m in msgs[:4]:
        assert m["dev"] == DEV and m["boot"] == 1
        buf = m["buf"]
        assert set(buf) == {"depth", "oldest_s", "drops"} and buf["drops"] == 0
        assert buf["depth"] >= 0 and 0 <= buf["oldest_s"] < 60
        h = m["health"]
        assert 0 < h["mem_free"] < 102400 and h["fifo_overruns"] >= 0 and h["windows"] >= 0
    assert msgs[3]["health"]["windows"] > msgs[0]["health"]["windows"]
    # what the late subscriber got: a retained status no older than the last live one
    assert len(retained) == 1 and retained[0][1] is True
    assert retained[0][2]["state"] == "online" and retained[0][2]["seq"] >= seqs[3]
