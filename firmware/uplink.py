# MQTT link: a thin policy layer over micropython-lib's umqtt.simple.MQTTClient.
#
# Uses only API shared by umqtt.simple 1.3.4 (PyPI) and the current micropython-lib
# version: MQTTClient(client_id, server, port, user, password, keepalive),
# set_callback, set_last_will, connect(clean_session), publish, subscribe,
# check_msg, ping, disconnect, and the `pid` and `sock` attributes. What we add:
#
# - Few writes per packet, TCP_NODELAY: umqtt writes a PUBLISH in four small
#   writes; with Nagle + delayed ACKs each QoS 1 publish then costs ~40 ms (22 msg/s).
#   Its socket is wrapped (_Sock): small writes (packet header, topic, packet id) are
#   gathered in a buffer allocated once and sent with one send when umqtt next reads
#   (or we flush); a payload too big for it goes straight out after them, without
#   being copied, and a payload still on flash (ring.Stored) is streamed from its
#   file in chunks. TCP_NODELAY is set as well.
# - A PUBACK timeout: umqtt blocks in publish() until the PUBACK, and its wait_msg()
#   calls setblocking(True), which would drop any timeout we set. The wrapper maps
#   setblocking(True) to settimeout(timeout_s), so a lost PUBACK raises OSError
#   (ETIMEDOUT) after timeout_s; we then treat the connection as lost.
# - Packet ids within 1..65535: umqtt only ever increments `pid`, so publish
#   65,536 carries id 0 and the broker disconnects (micropython-lib issue 94). We
#   reset `pid` to 0 before it passes 65535; the next packet then carries 1.
# - Reconnect with exponential backoff and jitter; birth and last-will status
#   messages (retained, QoS 1); subscription to our `cmd` and `ack` topics.
#
# Incoming messages are decoded with fieldwatch.wire.device and queued in `inbox`; they are
# never acted on inside umqtt's callback (which may run in the middle of publish()).
# A cmd that fails validation is queued too, with `id` None, its raw `payload` and the
# error (`bad`), and a retained one is marked `retained` (the broker hands it out again
# at every subscription): commands.py answers both without running them (docs/wire.md,
# "cmd"). umqtt's callback
# gets no RETAIN flag, so _Sock keeps the first byte of the packet being read: umqtt's
# wait_msg() reads it with read(1) and calls setblocking(True) next, in every version.

import socket as _socket
import time

from micropython import const

try:
    import random
except ImportError:  # pragma: no cover
    random = None

from fieldwatch.wire import device, topics

_IPPROTO_TCP = const(6)   # the same in Linux and lwIP (MicroPython's socket module
_TCP_NODELAY = const(1)   # does not always export them)
_GATHER = const(256)   # bytes of small writes gathered into one send
_MAX_PID = const(65535)
_INBOX_MAX = const(32)


class _Sock:
    """umqtt's socket, with gathered writes and a read timeout that survives setblocking(True)."""

    def __init__(self, sock, timeout_s):
        self._s = sock
        self._timeout = timeout_s
        self._out = bytearray(_GATHER)
        self._n = 0
        self._last = None   # what the last read(1) returned
        self.head = None    # the fixed header byte of the packet umqtt is reading
        sock.settimeout(timeout_s)
        try:
            sock.setsockopt(_IPPROTO_TCP, _TCP_NODELAY, 1)
        except (OSError, AttributeError):
            pass  # the gathered writes are enough on their own

    def connect(self, addr):
        self._s.connect(addr)

    def write(self, buf, n=None):
        if isinstance(buf, str):  # umqtt 1.3.4 writes a str client id / topic as it is
            buf = buf.encode()
        elif not isinstance(buf, (bytes, bytearray, memoryview)):
            # a payload left on flash (ring.Stored): stream it, chunk by chunk
            self.flush()
            buf.send_to(self._send_all)
            return len(buf)
        if n is None:
            n = len(buf)
        if self._n + n > _GATHER:
            self.flush()
            if n > _GATHER:  # a payload: send it as it is
                self._send(buf if n == len(buf) else memoryview(buf)[:n], n)
                return n
        self._out[self._n:self._n + n] = buf if n == len(buf) else memoryview(buf)[:n]
        self._n += n
        return n

    def _send_all(self, data):
        self._send(data, len(data))

    def _send(self, data, n):
        sent = 0
        while sent < n:
            k = self._s.write(data if sent == 0 else memoryview(data)[sent:n])
            if k is None:  # would block on a non-blocking socket
                self._s.settimeout(self._timeout)
                continue
            sent += k

    def flush(self):
        """Send everything gathered so far, in one send where the stack allows."""
        if self._n:
            n = self._n
            self._n = 0
            self._send(memoryview(self._out)[:n], n)

    def read(self, n):
        self.flush()
        b = self._s.read(n)
        if n == 1:
            self._last = b
        return b

    def setblocking(self, flag):
        self.flush()
        if flag:
            self.head = self._last  # wait_msg(): read(1), then setblocking(True)
            self._s.settimeout(self._timeout)
        else:
            self._s.setblocking(False)

    def settimeout(self, t):
        self._s.settimeout(self._timeout if t is None else t)

    def close(self):
        try:
            self.flush()
        finally:
            self._s.close()


class _SocketModule:
    """Stands in for the `socket` module inside umqtt.simple, so its socket is a _Sock."""

    def __init__(self, timeout_s):
        self.timeout_s = timeout_s

    def socket(self, *args):
        return _Sock(_socket.socket(*args), self.timeout_s)

    def getaddrinfo(self, *args):
        return _socket.getaddrinfo(*args)


def backoff_ms(attempt, lo_ms, hi_ms):
    """Delay before reconnect attempt `attempt` (0, 1, ...): exponential, capped, half jittered."""
    d = lo_ms << min(attempt, 16)
    if d > hi_ms:
        d = hi_ms
    half = d // 2
    if random is not None and half > 0:
        return half + random.getrandbits(16) % (half + 1)
    return d


class Link:
    """MQTT session for one device: connect(), publish(), poll(); inbox of commands/acks."""

    def __init__(self, dev, host, port=1883, user=None, password=None, keepalive=60,
                 timeout_s=5, backoff_lo_ms=500, backoff_hi_ms=60000, client_cls=None):
        self.dev = dev
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.timeout_s = timeout_s
        self.backoff_lo_ms = backoff_lo_ms
        self.backoff_hi_ms = backoff_hi_ms
        if client_cls is None:
            from umqtt import simple
            simple.socket = _SocketModule(timeout_s)
            client_cls = simple.MQTTClient
        self._cls = client_cls
        self.client = None
        self.connected = False
        self.attempts = 0
        self._next_try = time.ticks_ms()
        self._last_io = time.ticks_ms()
        self.inbox = []
        # health counters
        self.connects = 0
        self.disconnects = 0
        self.published = 0
        self.bad_messages = 0
        self.cmd_topic = topics.topic(dev, "cmd")
        self.ack_topic = topics.topic(dev, "ack")
        self.status_topic = topics.topic(dev, "status")

    # ---- session ------------------------------------------------------------------------
    def due(self):
        """True when a (re)connect attempt is allowed now (backoff elapsed)."""
        return time.ticks_diff(time.ticks_ms(), self._next_try) >= 0

    def connect(self, will, birth):
        """Try to connect (if the backoff allows): will/birth are encoded status payloads."""
        if self.connected:
            return True
        if not self.due():
            return False
        c = self._cls(self.dev, self.host, self.port, self.user, self.password, self.keepalive)
        c.set_callback(self._on_message)
        # retained offline status, published by the broker if we vanish
        c.set_last_will(self.status_topic, will, True, 1)
        try:
            # persistent session: commands and acks sent while we were away are queued
            c.connect(False)
            self.client = c
            self.connected = True
            self._wrap_pid()
            c.subscribe(self.cmd_topic, 1)
            self._wrap_pid()
            c.subscribe(self.ack_topic, 1)
            self._wrap_pid()
            c.publish(self.status_topic, birth, True, 1)
        except Exception as e:  # OSError, MQTTException, AssertionError from umqtt
            self._lost(e)
            return False
        self.attempts = 0
        self.connects += 1
        self._last_io = time.ticks_ms()
        return True

    def _lost(self, err=None):
        # Close the socket and schedule the next attempt with backoff
        c = self.client
        if c is not None and c.sock is not None:
            try:
                c.sock.close()
            except Exception:
                pass
        if self.connected:
            self.disconnects += 1
        self.connected = False
        self.client = None
        delay = backoff_ms(self.attempts, self.backoff_lo_ms, self.backoff_hi_ms)
        self.attempts += 1
        self._next_try = time.ticks_add(time.ticks_ms(), delay)
        if err is not None:
            print("mqtt: connection lost (%r); retry in %d ms" % (err, delay))

    def close(self, offline=None):
        """Publish `offline` status (if given) and disconnect cleanly."""
        if not self.connected:
            return
        try:
            if offline is not None:
                self.client.publish(self.status_topic, offline, True, 1)
            self.client.disconnect()
        except Exception:
            pass
        self.connected = False
        self.client = None

    def _wrap_pid(self):
        # micropython-lib issue 94: the id after 65535 must be 1, never 0
        if self.client.pid >= _MAX_PID:
            self.client.pid = 0

    # ---- traffic ------------------------------------------------------------------------
    def publish(self, kind, payload, retain=False, qos=1):
        """Publish on our topic for `kind`; True once PUBACKed (qos 1). False: link lost."""
        if not self.connected:
            return False
        c = self.client
        try:
            self._wrap_pid()
            c.publish(topics.topic(self.dev, kind), payload, retain, qos)
            if qos == 0:
                c.sock.flush()
        except Exception as e:
            self._lost(e)
            return False
        self.published += 1
        self._last_io = time.ticks_ms()
        return True

    def poll(self, max_messages=8):
        """Handle waiting incoming messages (non-blocking) and keepalive pings."""
        if not self.connected:
            return
        c = self.client
        try:
            for _ in range(max_messages):
                if c.check_msg() is None and not self.inbox_grew:
                    break
                self.inbox_grew = False
            c.sock.flush()  # a PUBACK for an incoming QoS 1 message
            if self.keepalive and time.ticks_diff(time.ticks_ms(), self._last_io) > self.keepalive * 500:
                c.ping()
                c.sock.flush()
                self._last_io = time.ticks_ms()
        except Exception as e:
            self._lost(e)

    inbox_grew = False

    def _on_message(self, topic, msg):
        # Called by umqtt, possibly inside publish(): decode and queue only.
        self.inbox_grew = True
        head = self.client.sock.head   # messages only arrive while self.client is set
        t = topic.decode() if isinstance(topic, (bytes, bytearray)) else topic
        cmd = t == self.cmd_topic
        try:
            m = device.decode_downlink(t, msg)
        except Exception as e:
            self.bad_messages += 1
            print("mqtt: bad message on %s: %r" % (topic, e))
            if not cmd:
                return
            m = {"kind": "cmd", "id": None, "cmd": None, "payload": msg, "bad": e}
        if cmd and head and head[0] & 1:
            m["retained"] = True
        if len(self.inbox) >= _INBOX_MAX:
            self.inbox.pop(0)
            self.bad_messages += 1
        self.inbox.append(m)

