"""The collector's database schema as Python sees it: tables, their columns, row types, wire kind -> table.

collector/migrations/ creates the tables; this module names them, once, for
every other module: batch.py builds rows of the types below, store.py COPYs
those rows as they are, queries.py reads the columns named here, partitions
are made for RECORD_TABLES. Nothing else spells a table name.

The table names are the ones 0001_core created and deployments (Grafana
dashboards, people's own SQL, TimescaleDB policies, monthly partitions named
after their table) already use, so they are kept; the one name per concept is
the RecordTable object, reached from the wire kind through TABLE_OF_KIND
(docs/collector.md, "Names").
"""

from collections import namedtuple

from fieldwatch.wire import codec

# Every device record table starts with the record's key, its times and their quality.
KEY_COLUMNS = ("device_id", "boot", "seq")
HEAD_COLUMNS = KEY_COLUMNS + ("ts", "recv_ts", "tq")
# The same head in a row: times are integer ms since the epoch (ts_ms: since boot when tq is 'none');
# the store turns them into timestamptz.
HEAD_FIELDS = KEY_COLUMNS + ("ts_ms", "recv_ms", "tq")
HEAD_TYPES = ("text", "int8", "int8", "int8", "int8", "text")   # PostgreSQL types of the head fields

# Per-axis feature columns of a feature window: x_rms, x_peak, x_crest, x_dom_hz, y_rms, ...
AXIS_FEATURE_COLUMNS = tuple("%s_%s" % (a, k) for a in codec.AXES for k in codec.FEATURE_KEYS)
AXIS_BAND_COLUMNS = tuple("%s_bands" % a for a in codec.AXES)


class Table:
    """A table the collector writes or reads, by name."""

    def __init__(self, name):
        self.name = name

    def __repr__(self):
        return "<table %s>" % self.name


class RecordTable(Table):
    """A table of device records: name, wire kind, columns after the head, their COPY types, the row type.

    `Row` is a namedtuple of HEAD_FIELDS + columns; batch.py builds them and
    store.py COPYs them without reshaping.
    """

    def __init__(self, name, kind, row, types):
        super().__init__(name)
        self.kind = kind
        self.Row = row
        self.columns = row._fields[len(HEAD_FIELDS):]
        self.types = tuple(types)
        assert len(self.types) == len(self.columns), name

    def stage_columns(self):
        """Column definitions of this table's staging table: the head fields (ms) and the columns."""
        return ", ".join("%s %s" % ct for ct in zip(HEAD_FIELDS + self.columns, HEAD_TYPES + self.types))


# -- row types: one per record table, fields = HEAD_FIELDS + the table's own columns --------------
Reading = namedtuple("Reading", HEAD_FIELDS + ("name", "value"))
Fix = namedtuple("Fix", HEAD_FIELDS + ("mode", "lat", "lon", "alt_m", "speed_mps", "track_deg",
                                       "eph_m", "epv_m", "sats"))
FeatureWindow = namedtuple("FeatureWindow", HEAD_FIELDS + ("len_ms", "rate_hz", "n") + AXIS_FEATURE_COLUMNS
                           + ("band_hz",) + AXIS_BAND_COLUMNS)
WaveformBlock = namedtuple("WaveformBlock", HEAD_FIELDS + ("rate_hz", "scale_g", "range_g", "n", "axes", "samples"))
LogLine = namedtuple("LogLine", HEAD_FIELDS + ("level", "text"))
# A command result (stored into its command's row) and a quarantined message; recv_ms: receipt, ms since the epoch.
CommandResult = namedtuple("CommandResult", ("id", "device_id", "cmd", "ok", "detail", "error", "boot", "seq",
                                             "recv_ms"))
QuarantineEntry = namedtuple("QuarantineEntry", ("recv_ms", "topic", "device_id", "code", "reason", "payload"))

# -- tables -------------------------------------------------------------------------------------
READINGS = RecordTable("readings", "readings", Reading, ("text", "float8"))
FIXES = RecordTable("fixes", "fix", Fix, ("int2",) + ("float8",) * 7 + ("int2",))
FEATURE_WINDOWS = RecordTable("feature_windows", "features", FeatureWindow,
                              ("int4", "float8", "int4") + ("float8",) * len(AXIS_FEATURE_COLUMNS)
                              + ("float8[]",) * (1 + len(AXIS_BAND_COLUMNS)))
WAVEFORMS = RecordTable("waveforms", "wave", WaveformBlock, ("float8", "float8", "int2", "int4", "int2", "bytea"))
DEVICE_LOGS = RecordTable("device_logs", "log", LogLine, ("text", "text"))

DEVICES = Table("devices")              # one row per device: status messages and last seen
DEVICE_BOOTS = Table("device_boots")    # estimated wall-clock start of each boot (records with tq 'none')
COMMANDS = Table("commands")            # commands sent (cmd) and their results (result)
QUARANTINE = Table("quarantine")        # messages that broke the wire contract

# Device record tables, in the order a batch writes them (and partitions.py partitions them).
RECORD_TABLES = (READINGS, FIXES, FEATURE_WINDOWS, WAVEFORMS, DEVICE_LOGS)

# Wire kind (fieldwatch.wire.topics) -> the table its messages are stored in; the one map from kind to table.
TABLE_OF_KIND = {t.kind: t for t in RECORD_TABLES}
TABLE_OF_KIND.update({"result": COMMANDS, "cmd": COMMANDS, "status": DEVICES})

# Tables whose rows hold a device key, and the key's columns, for delivery-gap checks.
KEYED = tuple((t.name, "boot", "seq") for t in RECORD_TABLES) + ((COMMANDS.name, "result_boot", "result_seq"),)

# Tables whose row counts /api/v1/status reports, in that order.
COUNTED = RECORD_TABLES + (QUARANTINE, COMMANDS)

# The API's telemetry kinds (?kind= of /api/v1/devices/<id>/telemetry, published in openapi.json,
# so kept as they are) -> the table each one reads.
API_TELEMETRY = {"readings": READINGS, "features": FEATURE_WINDOWS, "fixes": FIXES, "logs": DEVICE_LOGS}


def telemetry_columns(table):
    """The columns the API returns for a record table: the key and times without device_id, then its own."""
    return HEAD_COLUMNS[1:] + table.columns
