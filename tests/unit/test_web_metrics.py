"""collector.metrics: the Prometheus exposition is one consistent view of the Metrics counters."""

from prometheus_client.parser import text_string_to_metric_families

from collector.metrics import BATCH_BUCKETS, LATENCY_BUCKETS, Metrics, PrometheusExport, prometheus_text


def _families(metrics, **kw):
    body, ctype = prometheus_text(PrometheusExport(metrics, **kw))
    assert ctype.startswith("text/plain")
    text = body.decode()
    types = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert len(types) == len(set(types)), "a metric family is exported twice"
    return {f.name: f for f in text_string_to_metric_families(text)}


def test_web_metrics_export_every_counter_and_both_histograms():
    m = Metrics()
    m.add("messages_received", 7)
    m.quarantined("bad_json")
    m.batch_committed(4, 6, {"readings": 5, "fixes": 1}, 0.03, 0.2)
    m.batch_committed(1200, 1200, {"readings": 1200}, 3.0, 1.5)
    fams = _families(m, broker_connected=lambda: True, device_last_seen=lambda: {"pump-01": 1763888400.0})
    for name in Metrics.COUNTERS:
        assert "fieldwatch_" + name in fams, name
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in fams.values() for s in f.samples}
    assert samples[("fieldwatch_messages_received_total", ())] == 7
    assert samples[("fieldwatch_messages_quarantined_total", (("code", "bad_json"),))] == 1
    assert samples[("fieldwatch_rows_written_total", (("table", "readings"),))] == 1205
    assert samples[("fieldwatch_batch_size_messages_count", ())] == 2
    assert samples[("fieldwatch_batch_size_messages_sum", ())] == 1204
    # cumulative "le" buckets: the 4-message batch is within le=5, the 1200-message one only from le=2000
    assert samples[("fieldwatch_batch_size_messages_bucket", (("le", "5.0"),))] == 1
    assert samples[("fieldwatch_batch_size_messages_bucket", (("le", "1000.0"),))] == 1
    assert samples[("fieldwatch_batch_size_messages_bucket", (("le", "2000.0"),))] == 2
    assert samples[("fieldwatch_commit_latency_seconds_bucket", (("le", "0.05"),))] == 1
    assert samples[("fieldwatch_commit_latency_seconds_bucket", (("le", "+Inf"),))] == 2
    assert samples[("fieldwatch_lag_seconds", ())] == 1.5
    assert samples[("fieldwatch_broker_connected", ())] == 1
    assert samples[("fieldwatch_device_last_seen_timestamp_seconds", (("device", "pump-01"),))] == 1763888400.0
    assert len(BATCH_BUCKETS) + 1 == len([k for k in samples if k[0] == "fieldwatch_batch_size_messages_bucket"])
    assert len(LATENCY_BUCKETS) + 1 == len([k for k in samples if k[0] == "fieldwatch_commit_latency_seconds_bucket"])


def test_web_metrics_leave_out_per_device_series_when_the_database_fails():
    def down():
        raise OSError("database away")
    fams = _families(Metrics(), device_last_seen=down)
    assert "fieldwatch_device_last_seen_timestamp_seconds" not in fams
    assert "fieldwatch_messages_received" in fams
