"""The collector's MQTT fast path: PUBLISH decoding, read-ahead socket, batched PUBACK bytes.

decode_publish() is checked against paho's own decoder on packets built with
paho's own property encoder, so the two cannot drift apart unnoticed.
"""

import socket
import struct

import pytest
from paho.mqtt import _packet
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collector import mqtt


def publish_body(topic, payload, qos, mid=0, props=None):
    """Body (after the remaining length) of an MQTT 5 PUBLISH."""
    t = topic if isinstance(topic, bytes) else topic.encode()
    body = struct.pack("!H", len(t)) + t
    if qos:
        body += struct.pack("!H", mid)
    body += (props.pack() if props is not None else b"\x00")
    return body + payload


def test_mqtt_paho_internals_are_the_ones_the_fast_path_needs():
    assert mqtt.TUNED, "paho-mqtt changed its internals; the collector runs on the slow stock path"


@pytest.mark.parametrize("qos", [0, 1])
def test_mqtt_decode_publish_matches_paho_with_and_without_properties(qos):
    props = Properties(PacketTypes.PUBLISH)
    props.MessageExpiryInterval = 3600
    props.UserProperty = [("k", "v" * 200)]       # long enough for a two-byte properties length
    props.ContentType = "application/json"
    for p in (None, props):
        body = publish_body("fieldwatch/v1/pump-01/telemetry/readings", b'{"v":1}', qos, 4242, p)
        header = 0x30 | (qos << 1) | 1
        ours = mqtt.decode_publish(header, bytearray(body))
        ref = _packet.decode_publish(header, bytearray(body), 5)
        assert ours == (ref.topic.decode(), ref.mid, ref.qos, ref.retain, ref.payload)
        assert ours[4] == b'{"v":1}' and type(ours[4]) is bytes


def test_mqtt_decode_publish_bad_utf8_topic_becomes_replacement_characters():
    topic, mid, qos, retain, payload = mqtt.decode_publish(0x32, publish_body(b"a/\xff/b", b"x", 1, 7))
    assert topic == "a/\ufffd/b" and mid == 7 and qos == 1 and not retain and payload == b"x"


@pytest.mark.parametrize("body, why", [
    (b"\x00", "topic length"),
    (b"\x00\x03abc", "packet id"),
    (b"\x00\x01a\x00\x01\x05", "exceed"),
    (b"\x00\x01a\x00\x01\xff\xff\xff\xff\x01", "properties length"),
])
def test_mqtt_decode_publish_rejects_inconsistent_lengths(body, why):
    with pytest.raises(mqtt.MalformedPublish, match=why):
        mqtt.decode_publish(0x32, body)


def test_mqtt_read_ahead_serves_small_reads_from_one_recv_and_reports_pending():
    a, b = socket.socketpair()
    try:
        a.sendall(b"\x32\x05hello\x40\x02\x00\x07")
        r = mqtt._ReadAhead(b)
        assert r.recv(1) == b"\x32"
        assert r.pending() == 10, "the rest of both packets is buffered after one recv()"
        assert r.recv(1) == b"\x05" and r.recv(5) == b"hello" and r.recv(1) == b"\x40"
        assert r.recv(3) == b"\x02\x00\x07" and r.pending() == 0
        b.setblocking(False)
        with pytest.raises(BlockingIOError):
            r.recv(1)
        assert r.fileno() == b.fileno(), "everything but recv is the socket's own"
        a.close()
        assert r.recv(1) == b"", "end of stream is passed through"
    finally:
        a.close()
        b.close()


def test_mqtt_ack_many_queues_the_same_pubacks_paho_would_send_in_order():
    c = mqtt._Client(callback_api_version=mqtt.paho.CallbackAPIVersion.VERSION2, client_id="t",
                     protocol=mqtt.paho.MQTTv5, manual_ack=True)
    c.ack_many([1, 65535, 300])
    (pkt,) = list(c._out_packet)
    assert bytes(pkt["packet"]) == b"\x40\x02\x00\x01" + b"\x40\x02\xff\xff" + b"\x40\x02\x01\x2c"
    c.ack_many([])
    assert len(c._out_packet) == 1
