"""Topic layout of wire contract v1: build, parse, device ids, filters, the docs' ACL."""

import re
from pathlib import Path

import pytest

from fieldwatch.wire import topics

pytestmark = pytest.mark.unit

DOC = Path(__file__).resolve().parents[2] / "docs" / "wire.md"

EXPECTED = {
    "readings": "fieldwatch/v1/pump-07/telemetry/readings",
    "fix": "fieldwatch/v1/pump-07/telemetry/fix",
    "wave": "fieldwatch/v1/pump-07/telemetry/wave",
    "features": "fieldwatch/v1/pump-07/telemetry/features",
    "log": "fieldwatch/v1/pump-07/log",
    "result": "fieldwatch/v1/pump-07/result",
    "status": "fieldwatch/v1/pump-07/status",
    "cmd": "fieldwatch/v1/pump-07/cmd",
    "ack": "fieldwatch/v1/pump-07/ack",
}

VALID_IDS = ["a", "0", "pump-07", "7up_2", "esp32-a1b2c3", "x" * 32, "a-", "a_", "a--b__c"]
INVALID_IDS = [
    "", "x" * 33, "Pump-07", "PUMP", "-pump", "_pump", "pump 07", "pump.07", "pump/07", "+", "#",
    "pump+", "pump#", "<script>", "'; DROP TABLE devices; --", "p\u00fcmp", "pump\n", "pump\x00",
    None, 7, b"pump-07", ["pump-07"],
]


def mqtt_match(filter_, topic_name):
    """MQTT topic-filter matching (+ one level, # the rest), enough for these tests."""
    f, t = filter_.split("/"), topic_name.split("/")
    for i, part in enumerate(f):
        if part == "#":
            return True
        if i >= len(t) or (part != "+" and part != t[i]):
            return False
    return len(f) == len(t)


def test_every_kind_has_the_documented_topic():
    assert set(topics.SUFFIX) == set(EXPECTED)
    for kind, want in EXPECTED.items():
        assert topics.topic("pump-07", kind) == want
        assert "`fieldwatch/v1/<dev>/%s`" % topics.SUFFIX[kind] in DOC.read_text(encoding="utf-8")


def test_parse_inverts_topic():
    for dev in VALID_IDS:
        for kind in topics.SUFFIX:
            assert topics.parse(topics.topic(dev, kind)) == (dev, kind)


def test_suffix_tables_agree():
    assert {v: k for k, v in topics.SUFFIX.items()} == topics.KIND_OF_SUFFIX
    for kind in topics.TELEMETRY_KINDS:
        assert topics.SUFFIX[kind] == "telemetry/" + kind
    assert topics.PREFIX == "fieldwatch/v1/"


@pytest.mark.parametrize("name", [
    "fieldwatch/v2/pump-07/status",
    "fieldwatch/v1/pump-07/telemetry/temperature",
    "fieldwatch/v1/pump-07/telemetry/readings/extra",
    "fieldwatch/v1/pump-07/telemetry",
    "fieldwatch/v1/pump-07/",
    "fieldwatch/v1/pump-07",
    "fieldwatch/v1//status",
    "fieldwatch/v1/",
    "Fieldwatch/v1/pump-07/status",
    "/fieldwatch/v1/pump-07/status",
    "$share/g/fieldwatch/v1/pump-07/status",
    "fieldwatch/v1/pump-07/STATUS",
    "",
])
def test_parse_rejects_what_is_not_v1(name):
    assert topics.parse(name) is None


def test_parse_splits_but_does_not_validate_the_device_id():
    # parse() only splits; decode() then rejects the id with bad_device_id.
    assert topics.parse("fieldwatch/v1/<script>/status") == ("<script>", "status")
    assert not topics.valid_device_id("<script>")


@pytest.mark.parametrize("dev", VALID_IDS)
def test_valid_device_ids(dev):
    assert topics.valid_device_id(dev)


@pytest.mark.parametrize("dev", INVALID_IDS, ids=repr)
def test_invalid_device_ids(dev):
    assert not topics.valid_device_id(dev)
    with pytest.raises((ValueError, TypeError)):
        topics.topic(dev, "status")


def test_device_id_is_exactly_one_safe_topic_level():
    for dev in VALID_IDS:
        assert re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", dev)
        assert not set(dev) & set("/+#$ ")
    assert topics.DEVICE_ID_MAX == 32


def test_shared_subscription():
    assert topics.shared("fieldwatch/v1/+/log", "collectors") == "$share/collectors/fieldwatch/v1/+/log"
    for f in topics.COLLECTOR_FILTERS:
        assert topics.shared(f, "g").split("/", 2)[2] == f


def test_collector_filters_catch_exactly_what_devices_publish():
    assert set(topics.DEVICE_PUBLISHES) == set(topics.SUFFIX) - {"cmd", "ack"}
    for kind in topics.SUFFIX:
        name = topics.topic("pump-07", kind)
        caught = any(mqtt_match(f, name) for f in topics.COLLECTOR_FILTERS)
        assert caught == (kind in topics.DEVICE_PUBLISHES), kind
    # and nothing outside v1
    assert not any(mqtt_match(f, "fieldwatch/v2/pump-07/status") for f in topics.COLLECTOR_FILTERS)
    assert not any(mqtt_match(f, "fieldwatch/v1/pump-07/telemetry/readings/x") for f in topics.COLLECTOR_FILTERS)


# ---- the Mosquitto ACL example in docs/wire.md --------------------------------------

def _acl():
    doc = DOC.read_text(encoding="utf-8")
    block = doc[doc.index("## Broker ACL"):doc.index("## Record keys")]
    block = block[block.index("```\n") + 4:]
    block = block[:block.index("```")]
    users, patterns, user = {}, [], None
    for line in block.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        if words[0] == "user":
            user = words[1]
            users[user] = []
        elif words[0] == "topic":
            users[user].append((words[1], words[2]))
        elif words[0] == "pattern":
            patterns.append((words[1], words[2]))
    return users, patterns


def _allowed(users, patterns, username, access, name):
    rules = list(users.get(username, []))
    rules += [(a, p.replace("%u", username)) for a, p in patterns]
    return any(a in (access, "readwrite") and mqtt_match(p, name) for a, p in rules)


def test_doc_acl_confines_each_device_to_its_subtree():
    users, patterns = _acl()
    assert patterns, "the ACL example has no pattern lines"
    me, other = "pump-07", "pump-08"
    for kind in topics.SUFFIX:
        mine, theirs = topics.topic(me, kind), topics.topic(other, kind)
        publishes = kind in topics.DEVICE_PUBLISHES
        assert _allowed(users, patterns, me, "write", mine) == publishes, kind
        assert _allowed(users, patterns, me, "read", mine) == (kind in ("cmd", "ack")), kind
        assert not _allowed(users, patterns, me, "write", theirs), kind
        assert not _allowed(users, patterns, me, "read", theirs), kind


def test_doc_acl_services():
    users, patterns = _acl()
    for kind in topics.DEVICE_PUBLISHES:
        assert _allowed(users, patterns, "collector", "read", topics.topic("pump-07", kind))
    assert _allowed(users, patterns, "collector", "write", topics.topic("pump-07", "ack"))
    assert not _allowed(users, patterns, "collector", "write", topics.topic("pump-07", "cmd"))
    assert _allowed(users, patterns, "operator", "write", topics.topic("pump-07", "cmd"))
    assert _allowed(users, patterns, "operator", "read", topics.topic("pump-07", "result"))
    assert not _allowed(users, patterns, "operator", "write", topics.topic("pump-07", "ack"))
