"""Smoke test of the firmware benchmark: a quick run, one JSON object with the figures as numbers."""

import subprocess
import sys

from tests.harness.bench import ROOT, run_json

POSITIVE = ("fw_publish_msgs_per_s", "raw_publish_wait_msgs_per_s", "raw_publish_window_msgs_per_s",
            "fw_vs_raw_wait", "fw_vs_raw_window", "message_bytes", "heap_bytes", "heap_built_alloc_bytes",
            "heap_built_free_bytes", "heap_run_alloc_bytes", "heap_run_free_bytes", "heap_run_lowest_free_bytes",
            "heap_built_largest_free_block_bytes", "heap_run_largest_free_block_bytes", "heap_publish_free_bytes",
            "hot_samples", "wave_record_bytes", "wave_samples", "wire_bytes_per_axis_sample",
            "flash_bytes_per_features_record", "flash_bytes_per_wave_record", "features_record_bytes",
            "flash_overhead_bytes_per_record")
NUMBERS = POSITIVE + ("hot_alloc_bytes", "hot_alloc_bytes_per_sample", "wave_alloc_bytes", "fifo_overruns")


def test_bench_firmware_quick_json():
    res, progress = run_json("fieldwatch.tools.bench_firmware", "--quick", timeout=30)
    for key in NUMBERS:
        assert isinstance(res[key], (int, float)) and not isinstance(res[key], bool), (key, res[key])
        assert res[key] >= 0, (key, res[key])
    for key in POSITIVE:
        assert res[key] > 0, (key, res[key])
    # the figures hang together: the heap adds up, the ratios are of the rates shown, the run used the
    # firmware's default 800 Hz, and the payload published is the features record read from the ring
    assert res["heap_built_alloc_bytes"] + res["heap_built_free_bytes"] == res["heap_bytes"]
    assert abs(res["fw_vs_raw_wait"] - res["fw_publish_msgs_per_s"] / res["raw_publish_wait_msgs_per_s"]) < 1e-9
    assert res["rate_hz"] == 800 and res["message_bytes"] == res["features_record_bytes"]
    assert res["flash_bytes_per_features_record"] > res["features_record_bytes"]
    assert res["wave_record_bytes"] > 6 * res["wave_samples"]
    assert "(a) firmware QoS 1 publish" in progress


def test_bench_firmware_bad_option_is_a_message():
    r = subprocess.run([sys.executable, "-m", "fieldwatch.tools.bench_firmware", "--rate-hz", "1000"], cwd=ROOT,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "not an ADXL345 rate" in r.stderr and "Traceback" not in r.stderr
