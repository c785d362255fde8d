# Topic layout of wire contract v1 (see docs/wire.md, "Topics").
#
#   fieldwatch/v1/<device>/telemetry/<kind>   device -> collector  records (readings, fix, wave, features)
#   fieldwatch/v1/<device>/log                device -> collector  log records
#   fieldwatch/v1/<device>/result             device -> collector  command results (records)
#   fieldwatch/v1/<device>/status             device -> all        birth / last will, retained
#   fieldwatch/v1/<device>/cmd                operator -> device   commands
#   fieldwatch/v1/<device>/ack                collector -> device  delivery confirmation
#
# Everything a device may touch lies under fieldwatch/v1/<device>/, so one broker
# ACL pattern per direction confines each device to its own subtree.

ROOT = "fieldwatch"
VERSION_SEGMENT = "v1"
PREFIX = ROOT + "/" + VERSION_SEGMENT + "/"

# Record kinds carried on telemetry/<kind>.
TELEMETRY_KINDS = ("readings", "fix", "wave", "features")
# Every message kind and the topic suffix that carries it.
SUFFIX = {
    "readings": "telemetry/readings",
    "fix": "telemetry/fix",
    "wave": "telemetry/wave",
    "features": "telemetry/features",
    "log": "log",
    "result": "result",
    "status": "status",
    "cmd": "cmd",
    "ack": "ack",
}
KIND_OF_SUFFIX = {}
for _k in SUFFIX:
    KIND_OF_SUFFIX[SUFFIX[_k]] = _k

# What a device publishes, what the collector subscribes to.
DEVICE_PUBLISHES = ("readings", "fix", "wave", "features", "log", "result", "status")
COLLECTOR_FILTERS = (
    PREFIX + "+/telemetry/+",
    PREFIX + "+/log",
    PREFIX + "+/result",
    PREFIX + "+/status",
)

DEVICE_ID_MAX = 32


def valid_device_id(dev):
    """True when dev is 1..32 chars of a-z 0-9 '-' '_' starting with a letter or digit."""
    if not isinstance(dev, str) or not 0 < len(dev) <= DEVICE_ID_MAX:
        return False
    for i in range(len(dev)):
        c = ord(dev[i])
        if 97 <= c <= 122 or 48 <= c <= 57:  # a-z 0-9
            continue
        if i > 0 and (c == 45 or c == 95):  # - _
            continue
        return False
    return True


def topic(dev, kind):
    """The topic that carries messages of `kind` for device `dev`."""
    if not valid_device_id(dev):
        raise ValueError("invalid device id %r" % (dev,))
    return PREFIX + dev + "/" + SUFFIX[kind]


def parse(topic_name):
    """Split a v1 topic into (device_id, kind); None when it is not a v1 topic we know."""
    if not topic_name.startswith(PREFIX):
        return None
    rest = topic_name[len(PREFIX):]
    slash = rest.find("/")
    if slash <= 0:
        return None
    dev = rest[:slash]
    kind = KIND_OF_SUFFIX.get(rest[slash + 1:])
    if kind is None:
        return None
    return dev, kind


def shared(filter_, group):
    """A shared-subscription form of a topic filter: $share/<group>/<filter>."""
    return "$share/" + group + "/" + filter_
