"""In-process counters of the collector, read by the status page and /metrics.

`Metrics` is the one source of truth: the ingest loop feeds it, the status page
reads `snapshot()`, and `PrometheusExport` turns the same snapshot into the
Prometheus text format for `/metrics` (prometheus-client, a private registry).
"""

import threading
import time

# Commit latency histogram bucket bounds, seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Batch size histogram bucket bounds, messages per committed batch.
BATCH_BUCKETS = (1, 5, 10, 50, 100, 500, 1000, 2000, 5000)


class Metrics:
    """Thread-safe counters, gauges and one latency histogram."""

    COUNTERS = ("messages_received", "messages_valid", "messages_quarantined", "records_received",
                "rows_written", "rows_duplicate", "batches", "commit_errors", "acks_sent",
                "confirmations_sent")

    def __init__(self):
        self._lock = threading.Lock()
        self.started = time.time()
        self.counters = dict.fromkeys(self.COUNTERS, 0)
        self.quarantined_by_code = {}
        self.rows_by_table = {}
        self.batch_sizes = []            # the last 1000 batch sizes (messages)
        self.latency_counts = [0] * (len(LATENCY_BUCKETS) + 1)
        self.latency_sum = 0.0
        self.batch_size_counts = [0] * (len(BATCH_BUCKETS) + 1)
        self.batch_size_sum = 0
        self.lag_s = 0.0                 # receipt -> commit of the oldest message of the last batch
        self.acks_pending = 0
        self.db_ok = False
        self._failing = None             # (since, s since the epoch; last error) while commits fail, else None

    def add(self, name, n=1):
        """Increase counter `name` by n."""
        with self._lock:
            self.counters[name] += n

    def batch_committed(self, size, records, written, seconds, lag_s):
        """Record one committed batch."""
        with self._lock:
            c = self.counters
            c["batches"] += 1
            total = sum(written.values())
            c["rows_written"] += total
            c["rows_duplicate"] += max(0, records - total)
            for t, n in written.items():
                self.rows_by_table[t] = self.rows_by_table.get(t, 0) + n
            self.batch_sizes.append(size)
            del self.batch_sizes[:-1000]
            self.batch_size_counts[_bucket(BATCH_BUCKETS, size)] += 1
            self.batch_size_sum += size
            self.latency_counts[_bucket(LATENCY_BUCKETS, seconds)] += 1
            self.latency_sum += seconds
            self.lag_s = lag_s

    def commit_failed(self, reason):
        """Count a commit attempt that failed with an error a retry may fix (it is retried)."""
        with self._lock:
            self.counters["commit_errors"] += 1
            self.db_ok = False
            self._failing = ((self._failing or (time.time(),))[0], reason)

    def commit_succeeded(self):
        """A commit went through: commits are no longer failing."""
        with self._lock:
            self.db_ok = True
            self._failing = None

    def commit_failure(self):
        """(seconds failing, the last error) while commits fail and are being retried, else None."""
        with self._lock:
            f = self._failing
        return None if f is None else (max(0.0, time.time() - f[0]), f[1])

    def quarantined(self, code):
        """Count one quarantined message by its WireError code."""
        with self._lock:
            self.counters["messages_quarantined"] += 1
            self.quarantined_by_code[code] = self.quarantined_by_code.get(code, 0) + 1

    def snapshot(self):
        """A plain-dict copy for pages and tests."""
        with self._lock:
            sizes = self.batch_sizes
            return {
                "uptime_s": time.time() - self.started,
                "counters": dict(self.counters),
                "quarantined_by_code": dict(self.quarantined_by_code),
                "rows_by_table": dict(self.rows_by_table),
                "batch_size_avg": (sum(sizes) / len(sizes)) if sizes else 0.0,
                "batch_size_max": max(sizes) if sizes else 0,
                "commit_latency_buckets": list(zip(LATENCY_BUCKETS + (float("inf"),), self.latency_counts)),
                "commit_latency_sum_s": self.latency_sum,
                "batch_size_buckets": list(zip(BATCH_BUCKETS + (float("inf"),), self.batch_size_counts)),
                "batch_size_sum": self.batch_size_sum,
                "lag_s": self.lag_s,
                "acks_pending": self.acks_pending,
                "db_ok": self.db_ok,
            }


def _bucket(bounds, value):
    # Index of the first bound >= value (len(bounds) for +Inf): Prometheus "le" buckets.
    i = 0
    while i < len(bounds) and value > bounds[i]:
        i += 1
    return i


def _cumulative(buckets):
    # [(bound, count in that bucket)] -> Prometheus [("le", cumulative count)].
    out, total = [], 0
    for bound, n in buckets:
        total += n
        out.append(("+Inf" if bound == float("inf") else repr(float(bound)), total))
    return out


class PrometheusExport:
    """A prometheus-client collector that reads one Metrics snapshot per scrape.

    `broker_connected` and `device_last_seen` are optional callables: the first
    returns True/False, the second {device_id: last seen, s since the epoch}
    (read from the database, so it covers every collector sharing it; skipped
    when the database does not answer).
    """

    def __init__(self, metrics, broker_connected=None, device_last_seen=None):
        self.metrics = metrics
        self.broker_connected = broker_connected
        self.device_last_seen = device_last_seen

    def describe(self):
        """Nothing up front: the registry then calls collect() only on scrapes."""
        return []

    def collect(self):
        """Yield the metric families of the current snapshot."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

        s = self.metrics.snapshot()
        c = s["counters"]
        helps = {
            "messages_received": "MQTT messages received",
            "messages_valid": "messages that passed the wire contract",
            "records_received": "records in received messages (before deduplication)",
            "rows_duplicate": "records dropped as already stored",
            "batches": "batches committed",
            "commit_errors": "failed commit attempts (each is retried)",
            "acks_sent": "MQTT PUBACKs sent after commit",
            "confirmations_sent": "delivery confirmations (ack topic) published",
        }
        for name, value in c.items():  # every counter, including ones added later without a help text here
            if name not in ("messages_quarantined", "rows_written"):  # exported with labels below
                yield CounterMetricFamily("fieldwatch_" + name, helps.get(name, name.replace("_", " ")), value=value)
        q = CounterMetricFamily("fieldwatch_messages_quarantined", "messages kept in quarantine, by error code",
                                labels=["code"])
        for code, n in sorted(s["quarantined_by_code"].items()):
            q.add_metric([code], n)
        yield q
        rows = CounterMetricFamily("fieldwatch_rows_written", "rows newly stored, by table", labels=["table"])
        for table, n in sorted(s["rows_by_table"].items()):
            rows.add_metric([table], n)
        yield rows
        yield HistogramMetricFamily("fieldwatch_batch_size_messages", "messages per committed batch",
                                    buckets=_cumulative(s["batch_size_buckets"]), sum_value=s["batch_size_sum"])
        yield HistogramMetricFamily("fieldwatch_commit_latency_seconds", "time to commit one batch (with its retries)",
                                    buckets=_cumulative(s["commit_latency_buckets"]),
                                    sum_value=s["commit_latency_sum_s"])
        yield GaugeMetricFamily("fieldwatch_lag_seconds",
                                "receipt to commit of the oldest message of the last batch", value=s["lag_s"])
        yield GaugeMetricFamily("fieldwatch_acks_pending", "messages received but not yet acknowledged",
                                value=s["acks_pending"])
        yield GaugeMetricFamily("fieldwatch_database_ok", "1 if the last commit succeeded", value=int(s["db_ok"]))
        yield GaugeMetricFamily("fieldwatch_uptime_seconds", "seconds since the collector started",
                                value=s["uptime_s"])
        if self.broker_connected is not None:
            yield GaugeMetricFamily("fieldwatch_broker_connected", "1 while connected to the MQTT broker",
                                    value=int(bool(self.broker_connected())))
        if self.device_last_seen is not None:
            try:
                seen = self.device_last_seen()
            except Exception:  # the database is away: leave the per-device series out of this scrape
                seen = None
            if seen is not None:
                g = GaugeMetricFamily("fieldwatch_device_last_seen_timestamp_seconds",
                                      "when the collector last received anything from the device",
                                      labels=["device"])
                for dev, ts in sorted(seen.items()):
                    g.add_metric([dev], ts)
                yield g


def prometheus_text(export):
    """The Prometheus text exposition of one PrometheusExport, as (bytes, content type)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(export)
    return generate_latest(registry), CONTENT_TYPE_LATEST
