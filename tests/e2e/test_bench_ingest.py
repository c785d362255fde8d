"""Smoke test of the ingest benchmark: a tiny run of `python -m fieldwatch.tools.bench_ingest --json`.

It starts its own private Mosquitto and PostgreSQL through fieldwatch.devservices (the
benchmark needs track_commit_timestamp, which the shared cluster does not set),
so it checks the whole measuring chain end to end, not the figures' size.
"""

import subprocess
import sys

from fieldwatch.tools.bench_ingest import JSON_KEYS
from tests.harness.bench import run_json


def test_bench_ingest_tiny_run_prints_every_json_key_with_positive_values():
    res, _ = run_json("fieldwatch.tools.bench_ingest", "--messages", "2000", "--devices", "5", "--collectors", "2",
                      "--live-rate", "500", "--live-seconds", "1", "--wave-blocks", "10")
    for key in JSON_KEYS:
        assert isinstance(res.get(key), (int, float)) and res[key] > 0, (key, res.get(key))
    assert res["live_p50_ms"] <= res["live_p95_ms"] <= res["live_p99_ms"]
    assert res["live_samples"] == 500 and res["waveform_blocks"] == 10
    # the backlog of each drain and the live run, each reading exactly once
    assert res["readings_rows"] == res["readings_distinct_keys"] == 2000 + 500
    assert abs(res["ingest_ratio"] - res["ingest_msgs_per_s"] / res["raw_drain_msgs_per_s"]) < 1e-9


def test_bench_ingest_rejects_bad_arguments_with_a_message():
    r = subprocess.run([sys.executable, "-m", "fieldwatch.tools.bench_ingest", "--messages", "0"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--messages must be at least 1" in r.stderr and "Traceback" not in r.stderr
