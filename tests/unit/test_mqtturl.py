"""fieldwatch.mqtturl: the one MQTT URL parser (edge agent, collector, tools)."""

import pytest

import collector.mqtt
import edge_agent.uplink
from fieldwatch.mqtturl import parse_url


@pytest.mark.parametrize("url, want", [
    ("mqtt://broker.lan", ("broker.lan", 1883, None, None, False)),
    ("mqtts://broker.lan", ("broker.lan", 8883, None, None, True)),
    ("mqtt://127.0.0.1:18830", ("127.0.0.1", 18830, None, None, False)),
    ("mqtts://pump-07:s3cret@broker.example.com:8884", ("broker.example.com", 8884, "pump-07", "s3cret", True)),
    # a password with '@', ':', '/' and '%' must be %-encoded in the URL; it comes back decoded
    ("mqtt://pump-07:p%40ss%3Aw%2Fo%25rd@broker.lan", ("broker.lan", 1883, "pump-07", "p@ss:w/o%rd", False)),
    ("mqtt://us%65r%20one:x@broker.lan:1884", ("broker.lan", 1884, "user one", "x", False)),
    ("mqtt://collector@broker.lan", ("broker.lan", 1883, "collector", None, False)),
])
def test_parse_url(url, want):
    assert parse_url(url) == want


def test_agent_and_collector_share_the_parser():
    assert edge_agent.uplink.parse_url is parse_url
    assert collector.mqtt.parse_url is parse_url
