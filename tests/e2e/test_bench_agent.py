"""Smoke test of the edge agent benchmark: a tiny run (with the collector), one JSON object with positive figures."""

import subprocess
import sys

from tests.harness.bench import ROOT, run_json

KEYS = ("outbox_enqueue_per_s", "outbox_enqueue_batched_per_s", "raw_publish_msgs_per_s",
        "raw_single_publish_msgs_per_s", "drain_msgs_per_s", "drain_readings_per_s", "drain_ratio",
        "rss_mb", "cpu_percent")


def test_bench_agent_quick_json():
    res, progress = run_json("fieldwatch.tools.bench_agent", "--quick", "--backlog", "2000", "--raw-messages", "200",
                             "--enqueue-seconds", "0.5", "--cpu-seconds", "2", "--with-collector")
    for key in KEYS:
        assert isinstance(res[key], (int, float)) and res[key] > 0, (key, res[key])
    # Everything stored was drained, counted in readings and in messages of at most 500 readings.
    assert res["drain_readings"] == res["backlog_readings"] == 2000
    assert res["drain_messages"] >= res["drain_readings"] / 500
    assert abs(res["drain_ratio"] - res["drain_msgs_per_s"] / res["raw_publish_msgs_per_s"]) < 1e-9
    assert "(c) draining" in progress
    # --with-collector: the same backlog to the real collector, every reading stored exactly once.
    assert res["drain_confirmed_db_rows"] == 2000
    assert res["drain_confirmed_msgs_per_s"] > 0 and res["drain_confirmed_readings_per_s"] > 0


def test_bench_agent_bad_option_is_a_message():
    r = subprocess.run([sys.executable, "-m", "fieldwatch.tools.bench_agent", "--rate-hz", "1000"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "not an ADXL345 rate" in r.stderr and "Traceback" not in r.stderr
