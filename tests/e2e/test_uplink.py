"""edge_agent.uplink against a real Mosquitto: the window, and a link that survives an unexpected error."""

import os
import signal
import time

import paho.mqtt.client as paho

from edge_agent.uplink import Uplink
from fieldwatch.wire import codec, topics

DEV = "uplink-test"


def status(state):
    return codec.encode_status(DEV, 1, 0, int(time.time() * 1000), "ntp", state, "test", "test", "soft", 0, 0.0, 0)


def make(url, **kw):
    return Uplink(url, DEV, status, on_ack=lambda ranges: None, on_command=lambda payload, retained: None,
                  reconnect_min_s=0.05, reconnect_max_s=0.2, **kw)


def test_uplink_caps_unacknowledged_publishes_and_frees_slots_on_puback(fresh_broker):
    up = make(fresh_broker.url, max_unacked=5)
    up.start()
    try:
        assert up.wait_connected(10)
        topic = topics.topic(DEV, "readings")
        fresh_broker.stop()                       # no PUBACK can come now
        time.sleep(0.3)
        assert not up.publish(topic, b"x")        # and while disconnected nothing is accepted
        fresh_broker.start()
        assert up.wait_connected(10)
        os.kill(fresh_broker.pid, signal.SIGSTOP)  # the broker answers nothing for a while
        try:
            sent = 0
            while up.publish(topic, b"x") and sent <= 5:
                sent += 1
            assert sent == 5 and up.unacked == 5     # never more than max_unacked in flight
            assert not up.wait_can_publish(0.3)
        finally:
            os.kill(fresh_broker.pid, signal.SIGCONT)
        assert up.wait_can_publish(10)            # its PUBACKs free the window
        end = time.monotonic() + 10
        while up.unacked and time.monotonic() < end:
            time.sleep(0.01)
        assert up.unacked == 0 and up.counters["pubacks"] >= sent
    finally:
        up.stop(None)


def test_uplink_reconnects_after_an_unexpected_error_in_its_network_loop(fresh_broker):
    class Faulty(Uplink):
        fail = 1

        def _new_client(self):
            c = super()._new_client()
            if Faulty.fail:
                Faulty.fail -= 1
                real = c.loop

                def loop(timeout=1.0):
                    if self.connected:
                        raise AttributeError("injected: a bug inside the network loop")
                    return real(timeout)
                c.loop = loop
            return c

    up = Faulty(fresh_broker.url, DEV, status, on_ack=lambda r: None, on_command=lambda p, r: None,
                reconnect_min_s=0.05, reconnect_max_s=0.2)
    got = []
    sub = paho.Client(callback_api_version=paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    sub.on_message = lambda c, u, m: got.append(m.payload)
    host, port = fresh_broker.url.rsplit("/", 1)[-1].split(":")
    sub.connect(host, int(port))
    sub.subscribe(topics.topic(DEV, "readings"), qos=1)
    sub.loop_start()
    up.start()
    try:
        end = time.monotonic() + 10
        while up.generation < 2 and time.monotonic() < end:
            time.sleep(0.02)
        assert up.generation == 2 and up.counters["link_errors"] == 1
        assert up.wait_connected(10) and up.publish(topics.topic(DEV, "readings"), b"after")
        end = time.monotonic() + 10
        while not got and time.monotonic() < end:
            time.sleep(0.02)
        assert got == [b"after"]
    finally:
        up.stop(None)
        sub.loop_stop()
        sub.disconnect()
