"""Every read of the status page and the API: named methods, no SQL elsewhere in the web side.

Table and column names come from collector.schema; the web side's one write
(logging a command) is collector.store.CommandLog's.

The per-minute figures count stored records stamped (device time) within the
last minute, so they use the (device_id, ts) indexes; a backlog being replayed
does not show in them (the device's buffer depth and missing keys show it).
messages_1m groups those records into messages: the records of one message
share their receipt time and hold consecutive keys, so each such run counts as
one message (two messages of one kind with adjacent keys received in the same
millisecond count as one; duplicates that were dropped are not counted).

Every value is bound as a parameter; table and column names come only from
collector.schema, never from a request.
"""

import threading
import time

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from collector.schema import (API_TELEMETRY, COMMANDS, COUNTED, DEVICE_LOGS, DEVICES, FEATURE_WINDOWS, FIXES, KEYED,
                              QUARANTINE, READINGS, RECORD_TABLES, telemetry_columns)

# How long after its last message a device still counts as online, seconds (default of web.online_window_s).
ONLINE_WINDOW_S = 120
# The device list counts missing keys among the last GAP_WINDOW keys of the current boot
# only (an index range per table, cheap for every device on every refresh); the device
# view lists gap ranges over the whole boot.
GAP_WINDOW = 20_000
# How long one answer of devices() is shared between requests, seconds.
DEVICES_TTL_S = 1.0

# Telemetry kinds of the API -> (table name, columns returned).
TELEMETRY = {kind: (t.name, ", ".join(telemetry_columns(t))) for kind, t in API_TELEMETRY.items()}

_DEVICE_COLUMNS = """
    d.device_id, d.hw, d.fw, d.state, d.reset_reason, d.boot, d.next_seq, d.buf_depth, d.buf_oldest_s,
    d.buf_drops, d.health, d.first_seen, d.last_seen, d.status_at, d.clock_skew_ms,
    extract(epoch FROM now() - d.last_seen)::float8 AS last_seen_age_s,
    (d.state = 'online' AND d.last_seen > now() - make_interval(secs => %(online_s)s)) AS online,
    (SELECT count(*) FROM """ + READINGS.name + """ r WHERE r.device_id = d.device_id
       AND r.ts > now() - interval '1 minute') AS readings_1m,
    (SELECT count(*) FROM """ + FEATURE_WINDOWS.name + """ w WHERE w.device_id = d.device_id
       AND w.ts > now() - interval '1 minute') AS windows_1m,
    (SELECT count(DISTINCT (k, recv_ts, boot, grp)) FROM (""" + " UNION ALL ".join(
    "SELECT %d AS k, recv_ts, boot, seq - row_number() OVER (PARTITION BY recv_ts, boot ORDER BY seq) AS grp "
    "FROM %s WHERE device_id = d.device_id AND ts > now() - interval '1 minute'" % (i, table.name)
    for i, table in enumerate(RECORD_TABLES)) + """
     ) m) AS messages_1m,
    CASE WHEN d.boot IS NULL OR d.next_seq IS NULL THEN NULL ELSE greatest(0, least(d.next_seq, %(gap_window)s) - (
        """ + " + ".join(
    "(SELECT count(*) FROM %s k WHERE k.device_id = d.device_id AND k.%s = d.boot "
    "AND k.%s >= d.next_seq - %%(gap_window)s AND k.%s < d.next_seq)"
    % (t, b, s, s) for t, b, s in KEYED) + """)) END AS missing
"""


class Queries:
    """A small connection pool and the questions the web side asks."""

    def __init__(self, url, max_size=4, online_window_s=ONLINE_WINDOW_S):
        self.online_window_s = online_window_s
        self._devices_lock = threading.Lock()
        self._devices_cache = (float("-inf"), None)
        self.pool = ConnectionPool(url, min_size=0, max_size=max_size, open=True,
                                   kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": 3},
                                   timeout=5)

    def close(self):
        """Close every pooled connection."""
        self.pool.close()

    def _all(self, sql, params=()):
        with self.pool.connection() as conn:
            return conn.execute(sql, params).fetchall()

    def _one(self, sql, params=()):
        rows = self._all(sql, params)
        return rows[0] if rows else None

    def ping(self):
        """True when the database answers."""
        return self._all("SELECT 1 AS ok")[0]["ok"] == 1

    # -- devices ------------------------------------------------------------------
    def devices(self):
        """Every device with its state, health, records and messages over the last minute, missing keys.

        The answer is shared for DEVICES_TTL_S: every open status page polls it, and it
        costs some milliseconds per device, so N viewers cost the database what one does.
        """
        with self._devices_lock:
            at, rows = self._devices_cache
            if time.monotonic() - at < DEVICES_TTL_S:
                return rows
            rows = self._all("SELECT " + _DEVICE_COLUMNS + " FROM " + DEVICES.name + " d ORDER BY d.device_id",
                             {"online_s": self.online_window_s, "gap_window": GAP_WINDOW})
            self._devices_cache = (time.monotonic(), rows)
            return rows

    def device(self, device_id):
        """One device like devices() lists it, or None."""
        return self._one("SELECT " + _DEVICE_COLUMNS + " FROM " + DEVICES.name + " d WHERE d.device_id = %(dev)s",
                         {"online_s": self.online_window_s, "gap_window": GAP_WINDOW, "dev": device_id})

    def device_exists(self, device_id):
        """True when the device has sent anything."""
        return self._one("SELECT 1 AS x FROM %s WHERE device_id = %%s" % DEVICES.name, (device_id,)) is not None

    def last_seen(self):
        """{device_id: last seen, seconds since the epoch} for /metrics."""
        return {r["device_id"]: r["t"] for r in
                self._all("SELECT device_id, extract(epoch FROM last_seen)::float8 AS t FROM " + DEVICES.name)}

    def gaps(self, device_id, boot, next_seq, limit=100):
        """Ranges [first, last] of seqs below next_seq of this boot that no stored record holds (at most limit)."""
        keys = " UNION ALL ".join("SELECT %s AS seq FROM %s WHERE device_id = %%(dev)s AND %s = %%(boot)s AND %s < %%(next)s"
                                  % (s, t, b, s) for t, b, s in KEYED)
        return [[r["first"], r["last"]] for r in self._all("""
            WITH k AS (SELECT DISTINCT seq FROM (""" + keys + """) u),
                 edges AS (SELECT -1::int8 AS seq UNION ALL SELECT seq FROM k UNION ALL SELECT %(next)s::int8),
                 steps AS (SELECT seq, lead(seq) OVER (ORDER BY seq) AS nxt FROM edges)
            SELECT seq + 1 AS first, nxt - 1 AS last FROM steps WHERE nxt > seq + 1 ORDER BY seq LIMIT %(limit)s""",
            {"dev": device_id, "boot": boot, "next": next_seq, "limit": limit})]

    # -- telemetry ----------------------------------------------------------------
    def telemetry(self, device_id, kind, start, end, limit, offset, name=None):
        """Records of one kind with start <= ts < end, oldest first; limit/offset paginate."""
        table, columns = TELEMETRY[kind]
        where = "device_id = %(dev)s AND ts >= %(start)s AND ts < %(end)s"
        if name is not None:
            where += " AND name = %(name)s"
        return self._all("SELECT %s FROM %s WHERE %s ORDER BY ts, boot, seq LIMIT %%(limit)s OFFSET %%(offset)s"
                         % (columns, table, where),
                         {"dev": device_id, "start": start, "end": end, "limit": limit, "offset": offset,
                          "name": name})

    def vibration_buckets(self, device_id, start, end, bucket_s):
        """Feature windows averaged per bucket of bucket_s seconds: RMS mean and peak max per axis."""
        return self._all("""
            SELECT to_timestamp(floor(extract(epoch FROM ts) / %(b)s) * %(b)s) AS bucket, count(*) AS windows,
                   avg(x_rms) AS x_rms, avg(y_rms) AS y_rms, avg(z_rms) AS z_rms,
                   max(x_peak) AS x_peak, max(y_peak) AS y_peak, max(z_peak) AS z_peak
              FROM {t}
             WHERE device_id = %(dev)s AND ts >= %(start)s AND ts < %(end)s
             GROUP BY 1 ORDER BY 1""".format(t=FEATURE_WINDOWS.name),
                         {"dev": device_id, "start": start, "end": end, "b": bucket_s})

    def reading_buckets(self, device_id, start, end, bucket_s, name=None):
        """Readings per name and bucket of bucket_s seconds: count, mean, min, max."""
        return self._all("""
            SELECT to_timestamp(floor(extract(epoch FROM ts) / %(b)s) * %(b)s) AS bucket, name, count(*) AS n,
                   avg(value) AS mean, min(value) AS min, max(value) AS max
              FROM {t}
             WHERE device_id = %(dev)s AND ts >= %(start)s AND ts < %(end)s
               AND (%(name)s::text IS NULL OR name = %(name)s)
             GROUP BY 1, 2 ORDER BY 1, 2""".format(t=READINGS.name),
                         {"dev": device_id, "start": start, "end": end, "b": bucket_s, "name": name})

    def track(self, device_id, start, end, limit):
        """GPS fixes with start <= ts < end, oldest first, at most limit."""
        return self._all("""
            SELECT ts, mode, lat, lon, alt_m, speed_mps, track_deg, eph_m, sats FROM {t}
             WHERE device_id = %s AND ts >= %s AND ts < %s ORDER BY ts, boot, seq LIMIT %s""".format(t=FIXES.name),
                         (device_id, start, end, limit))

    def latest_window(self, device_id):
        """The newest feature window with band energies (the latest spectrum), or None."""
        return self._one("""SELECT {c} FROM {t}
             WHERE device_id = %s AND band_hz IS NOT NULL ORDER BY ts DESC LIMIT 1""".format(
            c=", ".join(telemetry_columns(FEATURE_WINDOWS)), t=FEATURE_WINDOWS.name), (device_id,))

    def logs(self, device_id, limit):
        """The newest log lines of a device, newest first."""
        return self._all("""SELECT boot, seq, ts, recv_ts, level, text FROM {t}
             WHERE device_id = %s ORDER BY ts DESC, boot DESC, seq DESC LIMIT %s""".format(t=DEVICE_LOGS.name),
                         (device_id, limit))

    # -- commands -----------------------------------------------------------------
    def command(self, cmd_id):
        """One command with its result, or None."""
        return self._one("""SELECT id, device_id, cmd, args, sent_at, result_at, ok, detail, error,
             result_boot, result_seq FROM {t} WHERE id = %s""".format(t=COMMANDS.name), (cmd_id,))

    def commands(self, device_id, limit):
        """A device's newest commands with their results."""
        return self._all("""SELECT id, device_id, cmd, args, sent_at, result_at, ok, detail, error,
             result_boot, result_seq FROM {t} WHERE device_id = %s
             ORDER BY coalesce(sent_at, result_at) DESC LIMIT %s""".format(t=COMMANDS.name), (device_id, limit))

    # -- quarantine and totals ----------------------------------------------------
    def table_counts(self):
        """Rows per data table."""
        out = {}
        for t in COUNTED:
            out[t.name] = self._all("SELECT count(*) AS n FROM %s" % t.name)[0]["n"]
        return out

    def quarantine(self, limit=50, offset=0, device_id=None, code=None):
        """The most recent quarantined messages (payload shown as text, cut short), newest first."""
        return self._all("""
            SELECT id, recv_ts, last_recv, times, topic, device_id, code, reason,
                   length(payload) AS size, encode(substring(payload for 200), 'escape') AS preview
              FROM {t}
             WHERE (%(dev)s::text IS NULL OR device_id = %(dev)s) AND (%(code)s::text IS NULL OR code = %(code)s)
             ORDER BY id DESC LIMIT %(limit)s OFFSET %(offset)s""".format(t=QUARANTINE.name),
                         {"dev": device_id, "code": code, "limit": limit, "offset": offset})
