"""The collector's MQTT link: the only collector module that imports paho.

paho's messages become our own `Message` at the first callback. The link keeps
a persistent MQTT 5 session (clean_start=False with a session expiry, so the
broker queues messages while the collector is down), subscribes in on_connect
(so a reconnect resubscribes), and acknowledges by hand (manual_ack): the
ingest loop calls ack() only after a message's rows are committed.
"""

import logging
import queue
import threading
import time
from urllib.parse import urlsplit

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

log = logging.getLogger("collector.mqtt")


class Message:
    """One received MQTT message, as the rest of the collector sees it."""

    __slots__ = ("topic", "payload", "mid", "qos", "retain", "recv_ms", "conn")

    def __init__(self, topic, payload, mid, qos, retain, recv_ms, conn):
        self.topic = topic
        self.payload = payload
        self.mid = mid
        self.qos = qos
        self.retain = retain
        self.recv_ms = recv_ms      # receipt time, ms since the epoch
        self.conn = conn            # connection generation: acks go only to the connection that delivered


def parse_url(url):
    """(host, port, username, password, tls) from mqtt://user:pass@host:port."""
    u = urlsplit(url)
    tls = u.scheme == "mqtts"
    return u.hostname, u.port or (8883 if tls else 1883), u.username, u.password, tls


class MqttLink:
    """A persistent-session MQTT 5 client that queues Messages and acks on request."""

    def __init__(self, url, client_id, filters, share_group="", session_expiry_s=86400,
                 receive_maximum=2000, keepalive_s=30):
        self.host, self.port, user, password, tls = parse_url(url)
        self.filters = [("$share/%s/%s" % (share_group, f)) if share_group else f for f in filters]
        self.messages = queue.SimpleQueue()
        self.connected = threading.Event()
        self._conn = 0
        self._session_expiry_s = session_expiry_s
        self._receive_maximum = receive_maximum
        self._keepalive_s = keepalive_s
        c = paho.Client(callback_api_version=paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                        protocol=paho.MQTTv5, manual_ack=True)
        if user:
            c.username_pw_set(user, password)
        if tls:
            c.tls_set()
        c.max_inflight_messages_set(100)   # our own publishes (delivery confirmations); see FIELD-NOTES
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(min_delay=1, max_delay=15)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self._client = c

    # -- paho callbacks (paho's network thread) -----------------------------------
    def _on_connect(self, client, userdata, flags, reason, properties):
        if reason.is_failure:
            log.warning("broker %s:%d refused the connection: %s", self.host, self.port, reason)
            return
        self._conn += 1
        log.info("connected to %s:%d (session present: %s)", self.host, self.port, flags.session_present)
        client.subscribe([(f, SubscribeOptions(qos=1)) for f in self.filters])
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason, properties):
        self.connected.clear()
        if reason != 0:
            log.warning("disconnected from broker (%s); reconnecting", reason)

    def _on_message(self, client, userdata, m):
        self.messages.put(Message(m.topic, m.payload, m.mid, m.qos, m.retain,
                                  int(time.time() * 1000), self._conn))

    # -- used by the ingest loop --------------------------------------------------
    def start(self):
        """Connect in the background; reconnects by itself from then on."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._session_expiry_s
        props.ReceiveMaximum = self._receive_maximum
        self._client.connect_async(self.host, self.port, keepalive=self._keepalive_s,
                                   clean_start=False, properties=props)
        self._client.loop_start()

    def ack(self, msg):
        """PUBACK one message, unless it came on an earlier connection (the broker will resend it)."""
        if msg.qos > 0 and msg.conn == self._conn:
            self._client.ack(msg.mid, msg.qos)

    def publish(self, topic, payload, qos=1, retain=False):
        """Publish without waiting; paho resends QoS 1 messages after a reconnect."""
        return self._client.publish(topic, payload, qos=qos, retain=retain)

    def stop(self):
        """Disconnect cleanly (the session stays on the broker) and stop the network thread."""
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
