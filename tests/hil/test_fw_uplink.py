"""Firmware MQTT link (firmware/uplink.py over umqtt.simple 1.3.4 from PyPI) on the
MicroPython Unix port against a real Mosquitto (the harness's fresh_broker)."""

import re
import threading
import time

import paho.mqtt.client as paho



class Counter:
    """A paho subscriber counting messages per topic (and their payloads)."""

    def __init__(self, port, topic, qos=1):
        self.messages = []
        self.lock = threading.Lock()
        self.c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="counter-%d" % time.time_ns())
        self.c.on_message = self._on_message
        self.c.connect("127.0.0.1", port)
        self.c.subscribe(topic, qos)
        self.c.loop_start()
        time.sleep(0.3)

    def _on_message(self, client, userdata, msg):
        with self.lock:
            self.messages.append((msg.topic, msg.payload, msg.retain))

    def wait(self, n, timeout=60):
        end = time.time() + timeout
        while time.time() < end and len(self.messages) < n:
            time.sleep(0.05)
        return len(self.messages)

    def stop(self):
        self.c.loop_stop()
        self.c.disconnect()


MANY = r"""
import sys, time
from uplink import Link
N = int(sys.argv[2])
link = Link("dev-many", "127.0.0.1", int(sys.argv[1]), keepalive=0, timeout_s=5)
assert link.connect(b'{"offline":1}', b'{"online":1}'), "no connection"
payload = bytearray(b"0000000")
t0 = time.ticks_ms()
for i in range(N):
    if not link.publish("log", payload):
        print("FAILED at", i, "pid", link.client and link.client.pid)
        sys.exit(1)
dt = time.ticks_diff(time.ticks_ms(), t0)
print("published", N, "ms", dt, "pid", link.client.pid, "disconnects", link.disconnects)
link.close()
"""


def test_fw_mqtt_more_than_65535_qos1_publishes(micropython, fw_path, fresh_broker, tmp_path):
    n = 70000
    sub = Counter(fresh_broker.port, "fieldwatch/v1/dev-many/log", qos=0)
    try:
        r = micropython(MANY, args=[fresh_broker.port, n], heapsize="100K", path=fw_path,
                        cwd=str(tmp_path), timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        m = re.search(r"published (\d+) ms (\d+) pid (\d+) disconnects (\d+)", r.stdout)
        assert m, r.stdout
        count, ms, pid, disc = map(int, m.groups())
        # 70000 publishes + 2 subscribes + 1 birth = 70003 ids: 70003 - 65535 = 4468
        assert count == n and disc == 0 and pid == 70003 - 65535
        got = sub.wait(n, timeout=30)
        assert got == n, "subscriber saw %d of %d" % (got, n)
        print("\nfirmware QoS 1 publish rate: %d msg/s (%d in %.1f s, 100K heap)"
              % (n * 1000 // max(ms, 1), n, ms / 1000))
    finally:
        sub.stop()


BIRTH = r"""
import sys, time
from uplink import Link
link = Link("dev-birth", "127.0.0.1", int(sys.argv[1]), keepalive=2, timeout_s=2)
assert link.connect(b"will-offline", b"birth-online")
print("connected", flush=True) if hasattr(print, "flush") else print("connected")
t0 = time.ticks_ms()
while time.ticks_diff(time.ticks_ms(), t0) < 20000:
    link.poll()
    while link.inbox:
        m = link.inbox.pop(0)
        if m["kind"] == "cmd" and m["id"] is None:
            # queued for App.command() to answer if it can (commands.check)
            print("got invalid cmd", m["bad"].code, m["payload"])
            continue
        print("got", m["kind"], m.get("cmd"), m.get("ranges"))
        if m["kind"] == "cmd":
            link.publish("log", b"done " + m["id"].encode())
            sys.exit(0)
    time.sleep_ms(10)
"""


def test_fw_mqtt_birth_will_and_commands(micropython, fw_path, fresh_broker, tmp_path):
    from fieldwatch.wire import codec
    sub = Counter(fresh_broker.port, "fieldwatch/v1/dev-birth/#")
    try:
        p = micropython.start(BIRTH, args=[fresh_broker.port], path=fw_path, cwd=str(tmp_path))
        assert sub.wait(1, timeout=10) >= 1
        assert sub.messages[0][1:] == (b"birth-online", False) or sub.messages[0][1] == b"birth-online"
        pub = paho.Client(paho.CallbackAPIVersion.VERSION2)
        pub.connect("127.0.0.1", fresh_broker.port)
        pub.loop_start()
        pub.publish("fieldwatch/v1/dev-birth/ack", codec.encode_ack("dev-birth", [(1, 0, 9)]), 1).wait_for_publish(5)
        pub.publish("fieldwatch/v1/dev-birth/cmd", b"not json", 1).wait_for_publish(5)
        pub.publish("fieldwatch/v1/dev-birth/cmd", codec.encode_cmd("c-1", "capture", {"n": 64}, 0), 1).wait_for_publish(5)
        out, _ = p.communicate(timeout=20)
        assert p.returncode == 0, out
        assert "got ack None [(1, 0, 9)]" in out and "got cmd capture" in out
        assert "bad message" in out and "got invalid cmd bad_json b'not json'" in out
        assert sub.wait(2 + 3) >= 4  # birth, our ack/cmd copies, the command result log
        assert any(m[1] == b"done c-1" for m in sub.messages)
        # the process is gone without DISCONNECT: the broker publishes the will, retained
        p2 = micropython.start(BIRTH, args=[fresh_broker.port], path=fw_path, cwd=str(tmp_path))
        time.sleep(1.0)
        p2.kill()
        p2.wait()
        deadline = time.time() + 10
        while time.time() < deadline and not any(m[1] == b"will-offline" for m in sub.messages):
            time.sleep(0.1)
        assert any(m[1] == b"will-offline" for m in sub.messages)
        pub.loop_stop()
        pub.disconnect()
    finally:
        sub.stop()
