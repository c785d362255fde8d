"""Synthetic devices that speak the wire contract: a load generator for tests and benchmarks.

`ConfirmingPublisher` behaves like a device's uplink reduced to its essentials:
it publishes records with QoS 1, keeps every message until the collector's
delivery confirmation (the `ack` topic) covers it, and resends what stays
unconfirmed. It is what the exactly-once tests and `bench_ingest` drive.

`FastPublisher` is a paced QoS 1 source for latency benchmarks: stock paho
spends ~120-180 us of CPU per QoS 1 publish (and queues messages behind a
small inflight window), enough to make a 5,000 msg/s publisher on a 2-core
machine the bottleneck whose queueing shows up as "collector latency". It
writes PUBLISH packets itself, many per write, and counts PUBACKs.

    python -m fieldwatch.tools.loadgen --devices 50 --rate 2000 --seconds 30
"""

import argparse
import random
import struct
import sys
import threading
import time
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collector.mqtt import _Client
from fieldwatch.wire import codec, topics


class ConfirmingPublisher:
    """Publish messages for many synthetic devices; forget them only when confirmed."""

    def __init__(self, url, client_id="loadgen", max_unacked=20000, session=True):
        u = urlsplit(url)
        self.host, self.port = u.hostname, u.port or 1883
        self.lock = threading.Lock()
        self.pending = {}        # (dev, boot, seq) of a message's first record -> [topic, payload, last_seq, sent_at]
        self.confirmed = 0
        self.resent = 0
        self._unacked = threading.Semaphore(max_unacked)   # PUBACKs outstanding (paho ids must not wrap)
        c = paho.Client(callback_api_version=paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                        protocol=paho.MQTTv5)
        if u.username:
            c.username_pw_set(u.username, u.password)
        c.max_inflight_messages_set(100)
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(0.2, 2)
        c.on_connect = self._on_connect
        c.on_message = self._on_message
        c.on_publish = lambda *a: self._unacked.release()
        self._session = session
        self.client = c
        self.connected = threading.Event()

    def _on_connect(self, client, userdata, flags, reason, properties):
        if reason.is_failure:
            return
        client.subscribe(topics.PREFIX + "+/ack", qos=1)
        self.connected.set()

    def _on_message(self, client, userdata, m):
        try:
            d = codec.decode(m.topic, m.payload)
        except codec.WireError:
            return
        with self.lock:
            for boot, lo, hi in d["ranges"]:
                for seq in range(lo, hi + 1):
                    entry = self.pending.get((d["dev"], boot, seq))
                    if entry is not None and codec.covers(d["ranges"], boot, entry[2]):
                        del self.pending[(d["dev"], boot, seq)]
                        self.confirmed += 1

    def start(self, timeout=10):
        """Connect and wait for the subscription to the confirmations."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 3600 if self._session else 0
        self.client.connect_async(self.host, self.port, keepalive=30, clean_start=not self._session,
                                  properties=props)
        self.client.loop_start()
        if not self.connected.wait(timeout):
            raise RuntimeError("loadgen could not connect to %s:%d" % (self.host, self.port))
        time.sleep(0.2)  # let the SUBACK land before the first confirmation can come

    def send(self, dev, kind, boot, seq, last_seq, payload):
        """Publish one message holding records seq..last_seq; keep it until confirmed."""
        t = topics.topic(dev, kind)
        with self.lock:
            self.pending[(dev, boot, seq)] = [t, payload, last_seq, time.monotonic()]
        self._publish(t, payload)

    def _publish(self, t, payload):
        self._unacked.acquire()
        info = self.client.publish(t, payload, qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS and info.rc != paho.MQTT_ERR_NO_CONN:
            self._unacked.release()

    def resend(self, older_than_s):
        """Publish again every message unconfirmed for longer than older_than_s; return how many."""
        now = time.monotonic()
        with self.lock:
            due = [e for e in self.pending.values() if now - e[3] > older_than_s]
            for e in due:
                e[3] = now
        for t, payload, _, _ in due:
            self._publish(t, payload)
        self.resent += len(due)
        return len(due)

    def wait_confirmed(self, timeout, resend_after_s=5.0):
        """Wait until every message is confirmed, resending stragglers; True on success."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                if not self.pending:
                    return True
            self.resend(resend_after_s)
            time.sleep(0.1)
        return False

    def stop(self):
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def _varint(n):
    # MQTT Variable Byte Integer
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


class _PubackCounter(_Client):
    """The collector's tuned client, plus a PUBACK hook for packets we wrote ourselves."""

    on_puback_mid = None

    def _handle_pubackcomp(self, cmd):
        if cmd == "PUBACK" and self.on_puback_mid is not None:
            self.on_puback_mid(struct.unpack_from("!H", self._in_packet["packet"])[0])
            return paho.MQTT_ERR_SUCCESS
        return super()._handle_pubackcomp(cmd)


class FastPublisher:
    """QoS 1 publisher for paced load: PUBLISH packets built here, several per write, at most `window` un-acked.

    No resending: it is for benchmarks that check the database afterwards.
    `acked` counts PUBACKs; `last_ack` is the monotonic time of the latest.
    """

    def __init__(self, url, client_id="fastpub", window=500):
        u = urlsplit(url)
        self.host, self.port = u.hostname, u.port or 1883
        self._slots = threading.Semaphore(window)
        self.acked = 0
        self.last_ack = None
        c = _PubackCounter(callback_api_version=paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                           protocol=paho.MQTTv5)
        if u.username:
            c.username_pw_set(u.username, u.password)
        c.on_puback_mid = self._on_puback
        c.on_connect = lambda *a: self.connected.set()
        self.client = c
        self.connected = threading.Event()

    def _on_puback(self, mid):
        self.acked += 1
        self.last_ack = time.monotonic()
        self._slots.release()

    def start(self, timeout=10):
        """Connect (clean session) and wait for the CONNACK."""
        self.client.connect_async(self.host, self.port, keepalive=30, clean_start=True)
        self.client.loop_start()
        if not self.connected.wait(timeout):
            raise RuntimeError("FastPublisher could not connect to %s:%d" % (self.host, self.port))

    def publish_many(self, messages):
        """Queue [(topic, payload)] as QoS 1 PUBLISH packets in one write; blocks while the window is full."""
        parts = []
        for t, payload in messages:
            self._slots.acquire()
            tb = t.encode()
            body = struct.pack("!H", len(tb)) + tb + struct.pack("!H", self.client._mid_generate()) + b"\x00" + payload
            parts.append(b"\x32" + _varint(len(body)) + body)
        if parts:
            self.client._packet_queue(0x32, b"".join(parts), 0, 1)

    def wait_acked(self, n, timeout):
        """True once n PUBACKs have arrived."""
        end = time.monotonic() + timeout
        while self.acked < n and time.monotonic() < end:
            time.sleep(0.01)
        return self.acked >= n

    def stop(self):
        """Disconnect."""
        self.client.disconnect()
        self.client.loop_stop()


def reading_payload(dev, boot, seq, t0_ms, n=1):
    """A readings message with n records (seq..seq+n-1) of a vibration-like scalar."""
    return codec.encode_readings(dev, boot, seq, t0_ms, "ntp",
                                 [[i * 10, "rms_g", round(0.07 + 0.001 * ((seq + i) % 97), 4)] for i in range(n)])


def main(argv=None):
    """Generate paced load from synthetic devices until the time is up."""
    p = argparse.ArgumentParser(prog="python -m fieldwatch.tools.loadgen", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", default="mqtt://127.0.0.1:1883", help="broker URL (default %(default)s)")
    p.add_argument("--devices", type=int, default=10, help="synthetic devices (default %(default)s)")
    p.add_argument("--rate", type=float, default=500, help="messages per second in total (default %(default)s)")
    p.add_argument("--seconds", type=float, default=10, help="how long to send (default %(default)s)")
    p.add_argument("--per-message", type=int, default=1, help="readings per message (default %(default)s)")
    a = p.parse_args(argv)
    pub = ConfirmingPublisher(a.url, "loadgen-%d" % random.randrange(1 << 30))
    try:
        pub.start()
    except RuntimeError as e:
        print("loadgen: %s" % e, file=sys.stderr)
        return 1
    boot = int(time.time()) & 0x7FFFFFFF
    devs = ["load-%03d" % i for i in range(a.devices)]
    seqs = dict.fromkeys(devs, 0)
    start = time.monotonic()
    sent = 0
    while time.monotonic() - start < a.seconds:
        dev = devs[sent % len(devs)]
        s = seqs[dev]
        pub.send(dev, "readings", boot, s, s + a.per_message - 1,
                 reading_payload(dev, boot, s, int(time.time() * 1000), a.per_message))
        seqs[dev] = s + a.per_message
        sent += 1
        ahead = sent / a.rate - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
        if sent % max(1, int(a.rate)) == 0:
            print("sent %d messages, %d confirmed" % (sent, pub.confirmed), flush=True)
    ok = pub.wait_confirmed(30)
    print("sent %d messages; confirmed %d; resent %d; %s" % (sent, pub.confirmed, pub.resent,
                                                             "all confirmed" if ok else "NOT all confirmed"))
    pub.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
