"""Commands and their results on the ESP32 as the contract says (issue 15, part 6): the
real firmware (mpy-cross) on the MicroPython Unix port with the board's 100 KB heap,
the ADXL345 model in a chip host, a real Mosquitto.

- every command gets exactly one result: a valid one with ok true, an invalid one
  whose id and name can be read with ok false and "<code>: <detail>", a retained one
  (handed out again at every subscription) is never run and answered once, a repeated
  id is neither run nor answered again;
- `sleep` without `s` sleeps until `wake` (no windows meanwhile), and the status says
  `sleeping` while asleep;
- a MemoryError while running a command (a window too big for the heap) is answered
  with ok false; the window stays as it was and the board keeps sampling.
"""

import json
import threading
import time

import paho.mqtt.client as paho
import pytest

from fieldwatch.tools.sim_board import ChipHost

HEAP = "100K"
DEV = "fw-cmd"

APP = r"""
import sys, os, time, gc
import config
cfg, problems = config.validate({"device_id": "fw-cmd", "wifi_ssid": "lab", "broker": sys.argv[1],
    "rate_hz": 400, "window_s": 1, "wave_every_s": 0, "ntp_host": None, "status_every_s": 1,
    "range_g": 16})
assert not problems, problems
del config
del sys.modules["config"]
gc.collect()
import app
a = app.App(cfg, sys.argv[2])
"""

LOOP = APP + r"""
def exists(p):
    try:
        os.stat(p)
        return True
    except OSError:
        return False
while not exists(sys.argv[3]):
    a.step()
    time.sleep_ms(5)
print("STOPPED range", a.adxl.range_g, "rate", a.adxl.rate_hz, "sleeping", a.sleeping,
      "commands loaded", "commands" in sys.modules)
"""


@pytest.fixture
def chip():
    host = ChipHost()
    yield host
    host.close()


class Operator:
    """A paho client that sends commands, watches the device's results, status and features, and acks them."""

    def __init__(self, port):
        self.got = []
        self.lock = threading.Lock()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="op-%d" % time.time_ns())
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port)
        for kind in ("result", "status", "telemetry/features"):
            self.c.subscribe("fieldwatch/v1/%s/%s" % (DEV, kind), 1)
        self.c.loop_start()

    def _on_message(self, client, userdata, msg):
        m = json.loads(msg.payload)
        kind = msg.topic.rsplit("/", 1)[-1]
        with self.lock:
            self.got.append((time.monotonic(), kind, m))
        if kind != "status":
            # confirm it as the collector would, or the board's 8 records in flight stall
            n = len(m["w"]) if kind == "features" else 1
            ack = {"v": 1, "dev": DEV, "ranges": [[m["boot"], m["seq"], m["seq"] + n - 1]]}
            client.publish("fieldwatch/v1/%s/ack" % DEV, json.dumps(ack), qos=1)

    def send(self, cid, cmd, args=None, retain=False, raw=None):
        body = raw if raw is not None else json.dumps({"v": 1, "id": cid, "cmd": cmd, "args": args or {}, "ts": 0})
        self.c.publish("fieldwatch/v1/%s/cmd" % DEV, body, qos=1, retain=retain).wait_for_publish(5)

    def of(self, kind, since=0):
        with self.lock:
            return [m for t, k, m in self.got if k == kind and t >= since]

    def results(self, cid):
        return [m for m in self.of("result") if m["id"] == cid]

    def wait(self, test, timeout=20):
        end = time.monotonic() + timeout
        while time.monotonic() < end and not test():
            time.sleep(0.05)
        return test()

    def stop(self):
        self.c.loop_stop()
        self.c.disconnect()


def test_fw_commands_one_result_each_retained_refused_sleep_until_wake(micropython, fw_path, fresh_broker, chip,
                                                                      tmp_path):
    op = Operator(fresh_broker.port)
    # a retained command, waiting before the board connects: never to be run
    op.send("r-1", "set_range", {"g": 2}, retain=True)
    (tmp_path / "flash").mkdir()
    stop = tmp_path / "stop"
    log = open(tmp_path / "device.log", "w")
    dev = micropython.start(LOOP, args=[fresh_broker.url, str(tmp_path / "flash") + "/", str(stop)],
                            heapsize=HEAP, path=fw_path, cwd=str(tmp_path), env={"FW_I2C": chip.address},
                            stdout=log)
    out = lambda: (tmp_path / "device.log").read_text()[-3000:]  # noqa: E731
    try:
        assert op.wait(lambda: op.results("r-1"), 30), out()
        # invalid, but id and name readable: ok false with the contract's code
        op.send("bad-1", "set_rate", {"hz": 7})
        op.send("bad-2", "capture", {"n": 3, "x": 1})
        # over what I2C can drain
        op.send("fast-1", "set_rate", {"hz": 3200})
        # valid, and sent twice with the same id (a redelivery): run and answered once
        op.send("g-1", "set_range", {"g": 4})
        op.send("g-1", "set_range", {"g": 4})
        assert op.wait(lambda: all(op.results(c) for c in ("bad-1", "bad-2", "fast-1", "g-1"))), out()
        # sleep without s: until wake; the status says sleeping
        op.send("s-1", "sleep")
        assert op.wait(lambda: op.results("s-1")), out()
        assert op.wait(lambda: [m["state"] for m in op.of("status")][-1:] == ["sleeping"], 10), out()
        time.sleep(1.5)                         # no window is cut short by the sleep any more
        asleep = time.monotonic()
        time.sleep(4)
        assert op.of("features", asleep) == [], "windows while asleep"
        statuses = op.of("status", asleep)
        assert len(statuses) >= 2 and {m["state"] for m in statuses} == {"sleeping"}, statuses
        op.send("w-1", "wake")
        assert op.wait(lambda: op.results("w-1")), out()
        assert op.wait(lambda: [m["state"] for m in op.of("status")][-1:] == ["online"], 10), out()
        woke = time.monotonic()
        assert op.wait(lambda: len(op.of("features", woke)) >= 2, 15), out()
        op.send("w-2", "wake")
        assert op.wait(lambda: op.results("w-2")), out()
        time.sleep(1)
        stop.write_text("stop")
        assert dev.wait(30) == 0, out()
    finally:
        if dev.poll() is None:
            dev.kill()
        op.stop()
    text = (tmp_path / "device.log").read_text()
    assert "Traceback" not in text, text[-3000:]
    # the retained set_range 2 never ran, g-1 did; the command code is out of the heap again
    assert "STOPPED range 4 rate 400 sleeping False commands loaded False" in text, text[-3000:]
    for cid in ("r-1", "bad-1", "bad-2", "fast-1", "g-1", "s-1", "w-1", "w-2"):
        assert len(op.results(cid)) == 1, (cid, op.results(cid))
    r = {cid: op.results(cid)[0] for cid in ("r-1", "bad-1", "bad-2", "fast-1", "g-1", "s-1", "w-1", "w-2")}
    assert r["r-1"]["ok"] is False and r["r-1"]["cmd"] == "set_range"
    assert r["r-1"]["error"] == "retained command refused (commands must not be retained)"
    assert r["bad-1"]["ok"] is False and r["bad-1"]["error"].startswith("bad_argument: set_rate.hz=7")
    assert r["bad-2"]["ok"] is False and r["bad-2"]["error"].startswith("bad_argument: capture takes no argument")
    assert r["fast-1"]["ok"] is False and "3200 Hz: over I2C" in r["fast-1"]["error"]
    assert r["g-1"]["ok"] is True and r["g-1"]["detail"] == {"g": 4}
    assert r["s-1"]["ok"] is True and "detail" not in r["s-1"]
    assert r["w-1"]["ok"] is True and r["w-1"]["detail"] == {"was_sleeping": True}
    assert r["w-2"]["ok"] is True and r["w-2"]["detail"] == {"was_sleeping": False}


MEMORY = APP + r"""
from fieldwatch.wire import contract
# fill the heap with 4 KB blocks until none fits: a 4.8 KB window (800 Hz) cannot be had
ballast = []
try:
    while True:
        ballast.append(bytearray(4096))
except MemoryError:
    pass
print("ballast", len(ballast), "free", gc.mem_free())
try:
    a._alloc_window(800)
    print("alloc no error")
except MemoryError:
    print("alloc MemoryError", len(a.window), a.window_n)
a.command({"kind": "cmd", "id": "m-1", "cmd": "set_rate", "args": {"hz": 800}, "ts": 0})
rec = a.outbox.next_to_send(0)
print("RESULT", rec[0], bytes(rec[4]).decode())
print("after", len(a.window), a.window_n, a.adxl.rate_hz)
ballast = None
gc.collect()
t0 = time.ticks_ms()
while a.windows < 2 and time.ticks_diff(time.ticks_ms(), t0) < 10000:
    a.sample()
    gc.collect()
    time.sleep_ms(5)
print("windows", a.windows)
"""


def test_fw_commands_memory_error_is_answered_and_the_board_runs_on(micropython, fw_path, chip, tmp_path):
    r = micropython(MEMORY, args=["mqtt://127.0.0.1:9", str(tmp_path) + "/"], heapsize=HEAP, path=fw_path,
                    cwd=str(tmp_path), env={"FW_I2C": chip.address}, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert "alloc MemoryError 2400 400" in lines, r.stdout     # the 400 Hz window kept, never None
    res = [ln for ln in lines if ln.startswith("RESULT ")]
    kind, body = res[0].split(" ", 2)[1:]
    result = json.loads(body)
    assert kind == "result" and result["id"] == "m-1" and result["cmd"] == "set_rate"
    assert result["ok"] is False and result["error"].startswith("MemoryError"), result
    assert "after 2400 400 400" in lines, r.stdout
    assert "windows 2" in lines, r.stdout
