"""The collector's MQTT link: the only collector module that imports paho.

paho's messages become our own `Message` at the first callback. The link keeps
a persistent MQTT 5 session (clean_start=False with a session expiry, so the
broker queues messages while the collector is down), subscribes in on_connect
(so a reconnect resubscribes), and acknowledges by hand (manual_ack): the
ingest loop calls ack_all() only after a batch's rows are committed.

Three costs of stock paho are cut here, because receiving was most of the
collector's CPU per message (docs/collector.md, "Performance"):
  * reads: paho reads every packet with three or more recv() calls (command
    byte, length bytes, body) and one select() per packet; `_ReadAhead` serves
    those reads from one 64 KiB recv(), and `_Client.loop_read` handles every
    packet already buffered before going back to select();
  * acks: client.ack() queues one 4-byte PUBACK, wakes the network thread and
    costs a send() each; `_Client.ack_many` queues a batch's PUBACKs, in
    arrival order, as one write.
  * decoding: for every PUBLISH paho builds an MQTTMessage and a Properties
    object (tens of microseconds in pure Python, most of it in Properties);
    `_Client._handle_publish` decodes a QoS 0/1 PUBLISH with
    `decode_publish()` straight into our `Message` (properties are skipped:
    the collector uses none, and it announces no topic aliases, so the broker
    sends none). QoS 2 and MQTT 3 packets go through paho's own handler.
These rely on paho internals (2.1/2.2); when they are missing the link falls
back to stock paho behaviour (TUNED is False) and stays correct, only slower.
"""

import logging
import queue
import struct
import threading
import time

import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from fieldwatch.mqtturl import parse_url

log = logging.getLogger("collector.mqtt")

READ_SIZE = 65536        # bytes per recv(): several hundred small PUBLISH packets
READ_BURST = 256         # packets handled per select() at most, so our writes (acks) are not starved
_PUBACK = struct.Struct("!BBH")   # MQTT 5 PUBACK, reason Success omitted: 0x40, 2, packet id
_INTERNALS = ("_create_socket", "_packet_read", "_loop_rc_handle", "_packet_queue", "_handle_publish")
TUNED = all(hasattr(paho.Client, name) for name in _INTERNALS)
_U16 = struct.Struct("!H")


class MalformedPublish(ValueError):
    """A PUBLISH packet whose lengths do not add up."""


def decode_publish(header, packet, v5=True):
    """(topic, mid, qos, retain, payload) of a PUBLISH packet's fixed-header byte and body.

    The body is everything after the remaining length. MQTT 5 properties are
    skipped. A topic that is not valid UTF-8 is decoded with U+FFFD in place of
    the bad bytes, so it fails topic validation and the message is quarantined
    instead of breaking the network thread.
    """
    qos = (header >> 1) & 3
    n = len(packet)
    if n < 2:
        raise MalformedPublish("PUBLISH shorter than its topic length")
    tlen = _U16.unpack_from(packet, 0)[0]
    pos = 2 + tlen
    topic = bytes(packet[2:pos]).decode("utf-8", "replace")
    mid = 0
    if qos:
        if n < pos + 2:
            raise MalformedPublish("PUBLISH without a packet id")
        mid = _U16.unpack_from(packet, pos)[0]
        pos += 2
    if v5:
        plen = shift = 0
        while True:            # Variable Byte Integer: the properties' length
            if pos >= n or shift > 21:
                raise MalformedPublish("PUBLISH with a broken properties length")
            b = packet[pos]
            pos += 1
            plen |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                break
        pos += plen
    if pos > n:
        raise MalformedPublish("PUBLISH lengths exceed the packet")
    return topic, mid, qos, bool(header & 1), bytes(packet[pos:])


class _ReadAhead:
    """A socket whose recv() is served from a read-ahead buffer; everything else is the socket's.

    pending() tells paho's loop that buffered bytes are waiting, so it does not
    block in select() while a packet sits in our buffer (paho checks it for TLS).
    """

    def __init__(self, sock):
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, n):
        """Up to n bytes, from the buffer or one large recv(); raises like socket.recv()."""
        if self._pos >= len(self._buf):
            data = self._sock.recv(READ_SIZE)
            if not data:
                return data
            self._buf, self._pos = data, 0
        end = self._pos + n
        out = self._buf[self._pos:end]
        self._pos += len(out)
        return out

    def pending(self):
        """Bytes readable without touching the network."""
        inner = self._sock.pending() if hasattr(self._sock, "pending") else 0
        return len(self._buf) - self._pos + inner

    def __getattr__(self, name):
        return getattr(self._sock, name)


class _Client(paho.Client):
    """paho's Client with read-ahead, bursts of packets per select(), lean PUBLISH decoding and batched PUBACKs.

    on_publish_received(topic, mid, qos, retain, payload), when set, receives
    every QoS 0/1 PUBLISH instead of paho's on_message.
    """

    on_publish_received = None
    last_connect_error = None        # why the last (re)connect failed, for the log

    def reconnect(self):
        """paho's reconnect(), remembering why it failed (paho's on_connect_fail is told no reason)."""
        try:
            rc = super().reconnect()
        except (OSError, ValueError) as e:
            self.last_connect_error = str(e).strip() or type(e).__name__
            raise
        self.last_connect_error = None
        return rc

    def _handle_publish(self):
        cb = self.on_publish_received
        header = self._in_packet["command"]
        if cb is None or not TUNED or (header >> 1) & 3 > 1 or self._protocol != paho.MQTTv5:
            return super()._handle_publish()
        try:
            topic, mid, qos, retain, payload = decode_publish(header, self._in_packet["packet"])
        except MalformedPublish as e:
            log.warning("malformed PUBLISH from the broker: %s; reconnecting", e)
            return paho.MQTT_ERR_PROTOCOL
        cb(topic, mid, qos, retain, payload)
        if qos == 1 and not self._manual_ack:
            return self._send_puback(mid)
        return paho.MQTT_ERR_SUCCESS

    def _create_socket(self):
        sock = super()._create_socket()
        return _ReadAhead(sock) if TUNED and self._transport != "websockets" else sock

    def loop_read(self, max_packets=1):
        """Handle every packet already received (up to READ_BURST), not just one."""
        if not TUNED:
            return super().loop_read(max_packets)
        for _ in range(READ_BURST):
            if self._sock is None:
                return paho.MQTT_ERR_NO_CONN
            rc = self._packet_read()
            if rc > 0:
                return self._loop_rc_handle(rc)
            if rc == paho.MQTT_ERR_AGAIN or not getattr(self._sock, "pending", int)():
                return paho.MQTT_ERR_SUCCESS
        return paho.MQTT_ERR_SUCCESS

    def ack_many(self, mids):
        """PUBACK QoS 1 packet ids, in the given order, as one write."""
        if not mids:
            return
        if not TUNED:
            for mid in mids:
                self.ack(mid, 1)
            return
        pack = _PUBACK.pack
        self._packet_queue(paho.PUBACK, b"".join([pack(paho.PUBACK, 2, mid) for mid in mids]), 0, 0)


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
        self._opened = False        # connect() has opened the first connection
        c = _Client(callback_api_version=paho.CallbackAPIVersion.VERSION2, client_id=client_id,
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
        c.on_connect_fail = self._on_connect_fail
        c.on_message = self._on_message
        c.on_publish_received = self._on_publish_received
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
        # Only when paho's internals are not the ones _Client knows (TUNED False), or for QoS 2.
        try:
            topic = m.topic
        except UnicodeDecodeError:
            topic = m._topic.decode("utf-8", "replace")
        self.messages.put(Message(topic, m.payload, m.mid, m.qos, m.retain,
                                  int(time.time() * 1000), self._conn))

    def _on_publish_received(self, topic, mid, qos, retain, payload):
        self.messages.put(Message(topic, payload, mid, qos, retain, int(time.time() * 1000), self._conn))

    def _on_connect_fail(self, client, userdata):
        # A reconnect after a disconnect failed (paho retries with its own backoff).
        log.warning("broker %s:%d unreachable: %s; retrying", self.host, self.port,
                    getattr(client, "last_connect_error", None) or "connection failed")

    # -- used by start-up and the ingest loop ---------------------------------------
    def _connect_properties(self):
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self._session_expiry_s
        props.ReceiveMaximum = self._receive_maximum
        return props

    def connect(self):
        """Open the connection once (TCP, TLS, CONNECT sent); raises OSError with the reason. start() follows."""
        self._client.connect(self.host, self.port, keepalive=self._keepalive_s, clean_start=False,
                             properties=self._connect_properties())
        self._opened = True

    def start(self):
        """Run the network thread; connects in the background unless connect() did, and reconnects by itself."""
        if not self._opened:
            self._client.connect_async(self.host, self.port, keepalive=self._keepalive_s,
                                       clean_start=False, properties=self._connect_properties())
        self._client.loop_start()

    def ack(self, msg):
        """PUBACK one message, unless it came on an earlier connection (the broker will resend it)."""
        if msg.qos > 0 and msg.conn == self._conn:
            self._client.ack(msg.mid, msg.qos)

    def ack_all(self, messages):
        """PUBACK messages in the given (arrival) order, skipping those of earlier connections; one write."""
        conn = self._conn   # subscriptions are QoS 1, so the broker sends nothing above QoS 1
        self._client.ack_many([m.mid for m in messages if m.conn == conn and m.qos == 1])

    def publish(self, topic, payload, qos=1, retain=False):
        """Publish without waiting; paho resends QoS 1 messages after a reconnect."""
        return self._client.publish(topic, payload, qos=qos, retain=retain)

    def stop(self):
        """Disconnect cleanly (the session stays on the broker) and stop the network thread."""
        try:
            self._client.disconnect()
        finally:
            self._client.loop_stop()
