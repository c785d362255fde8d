"""In-process counters of the collector, read by the status page and /metrics."""

import threading
import time

# Commit latency histogram bucket bounds, seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


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
        self.lag_s = 0.0                 # receipt -> commit of the oldest message of the last batch
        self.acks_pending = 0
        self.db_ok = False

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
            i = 0
            while i < len(LATENCY_BUCKETS) and seconds > LATENCY_BUCKETS[i]:
                i += 1
            self.latency_counts[i] += 1
            self.latency_sum += seconds
            self.lag_s = lag_s

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
                "lag_s": self.lag_s,
                "acks_pending": self.acks_pending,
                "db_ok": self.db_ok,
            }
