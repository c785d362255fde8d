"""Read-side SQL for the status page and the API: named methods, no SQL elsewhere."""

from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool


class Queries:
    """A small connection pool and the questions the web side asks."""

    def __init__(self, url, max_size=4):
        self.pool = ConnectionPool(url, min_size=0, max_size=max_size, open=True,
                                   kwargs={"autocommit": True, "row_factory": dict_row, "connect_timeout": 3},
                                   timeout=5)

    def close(self):
        self.pool.close()

    def _all(self, sql, params=()):
        with self.pool.connection() as conn:
            return conn.execute(sql, params).fetchall()

    def ping(self):
        """True when the database answers."""
        return self._all("SELECT 1 AS ok")[0]["ok"] == 1

    def devices(self):
        """Every device with its state, health and record counts over the last minute."""
        return self._all("""
            SELECT d.*, extract(epoch FROM now() - d.last_seen) AS last_seen_age_s,
                   (SELECT count(*) FROM readings r WHERE r.device_id = d.device_id
                      AND r.recv_ts > now() - interval '1 minute') AS readings_1m,
                   (SELECT count(*) FROM feature_windows w WHERE w.device_id = d.device_id
                      AND w.recv_ts > now() - interval '1 minute') AS windows_1m
              FROM devices d ORDER BY d.device_id""")

    def table_counts(self):
        """Rows per data table."""
        out = {}
        for t in ("readings", "fixes", "feature_windows", "waveforms", "device_logs", "quarantine", "commands"):
            out[t] = self._all("SELECT count(*) AS n FROM %s" % t)[0]["n"]
        return out

    def quarantine(self, limit=50):
        """The most recent quarantined messages (payload shown as text, cut short)."""
        return self._all("""
            SELECT id, recv_ts, last_recv, times, topic, device_id, code, reason,
                   length(payload) AS size, encode(substring(payload for 200), 'escape') AS preview
              FROM quarantine ORDER BY id DESC LIMIT %s""", (limit,))
