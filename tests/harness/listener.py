"""A subscriber to one device's topics on the real broker, as the collector would see them."""

import paho.mqtt.client as paho

from fieldwatch.wire import codec, topics


class DeviceListener:
    """Collects every message under fieldwatch/v1/<dev>/# (QoS 1) in a background thread."""

    def __init__(self, mqtt_url, dev):
        host, port = mqtt_url.rsplit("/", 1)[-1].split(":")
        self.messages = []
        self.c = paho.Client(callback_api_version=paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload))
        self.c.connect(host, int(port))
        self.c.subscribe("fieldwatch/v1/%s/#" % dev, qos=1)
        self.c.loop_start()

    def of_kind(self, kind):
        """Raw payloads of the messages of one kind (telemetry kind, status, ack ...)."""
        return [p for t, p in list(self.messages) if topics.parse(t) and topics.parse(t)[1] == kind]

    def decoded(self, kind):
        """The messages of one kind, decoded and validated by the wire codec."""
        out = []
        for t, p in list(self.messages):
            parsed = topics.parse(t)
            if parsed and parsed[1] == kind:
                out.append(codec.decode_wave(parsed[0], p) if kind == "wave" else codec.decode(t, p))
        return out

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()
