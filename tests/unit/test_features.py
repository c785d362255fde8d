"""Feature extraction against the real CWRU recordings in tests/data/vibration (figures from its README)."""

import json
import os

import numpy as np
import pytest

from edge_agent import features
from fieldwatch.wire import codec

DATA = os.path.join(os.path.dirname(__file__), "..", "data", "vibration")
RATE = 12000.0

# file: (RMS with DC, AC RMS, peak abs, crest, dominant peak < 1600 Hz), README "Reference figures".
REFERENCE = {
    "cwru_97_normal_de_12k.csv": (0.07115, 0.07009, 0.2821, 3.965, 360.0),
    "cwru_105_inner_race_007_de_12k.csv": (0.28940, 0.28902, 1.5846, 5.475, 1323.5),
    "cwru_118_ball_007_de_12k.csv": (0.13767, 0.13685, 0.5580, 4.053, 1437.0),
    "cwru_130_outer_race_007_de_12k.csv": (0.66172, 0.66094, 3.5476, 5.361, 688.5),
}


def load(name):
    with open(os.path.join(DATA, name)) as f:
        assert f.readline().strip() == "accel_g"
        values = [float(line) for line in f]
    x = np.asarray(values, dtype=np.float32).astype(np.float64)  # float32 as written, float64 arithmetic
    assert len(x) == 24000
    return x


@pytest.fixture(scope="module", params=sorted(REFERENCE))
def recording(request):
    return request.param, load(request.param)


def test_features_rms_peak_crest_match_reference(recording):
    name, x = recording
    ref_rms, _, ref_peak, ref_crest, _ = REFERENCE[name]
    f = features.axis_features(x, RATE, remove_dc=False)   # the README's figures include DC
    # The README prints 4-5 significant digits; recomputation agrees to ~1e-4 relative.
    assert f["rms"] == pytest.approx(ref_rms, rel=1e-4)
    assert f["crest"] == pytest.approx(ref_crest, rel=2e-4)
    # peak abs is one of the written values: exact up to the README's printed digits.
    assert f["peak"] == pytest.approx(ref_peak, abs=5e-5)
    assert f["peak"] in np.abs(x)


def test_features_remove_dc_gives_ac_rms(recording):
    name, x = recording
    f = features.axis_features(x, RATE, remove_dc=True)
    assert f["rms"] == pytest.approx(REFERENCE[name][1], rel=1e-4)
    assert f["peak"] == pytest.approx(float(np.max(np.abs(x - x.mean()))), rel=1e-12)


def test_features_dominant_peak_below_1600_hz_lands_on_reference_bin(recording):
    name, x = recording
    # Whole 24000-sample file at 12 kHz (0.5 Hz bins), restricted to < 1600 Hz, as the README does.
    assert features.dominant_hz(x, RATE, max_hz=1600) == REFERENCE[name][4]


def test_features_bands_sum_to_mean_square(recording):
    name, x = recording
    edges = features.band_edges(RATE)
    assert edges == [0, 10, 50, 100, 200, 400, 6000]
    for remove_dc in (False, True):
        f = features.axis_features(x, RATE, edges, remove_dc=remove_dc)
        assert len(f["bands"]) == 6
        assert min(f["bands"]) >= 0
        assert sum(f["bands"]) == pytest.approx(f["rms"] ** 2, rel=1e-9)
    # With DC included the first band holds the mean's square on top of its AC part.
    dc = features.axis_features(x, RATE, edges, remove_dc=False)["bands"][0]
    ac = features.axis_features(x, RATE, edges, remove_dc=True)["bands"][0]
    assert dc - ac == pytest.approx(x.mean() ** 2, rel=1e-6)


def test_features_sine_energy_lands_in_its_band():
    rate, n = 800.0, 800
    t = np.arange(n) / rate
    x = 0.5 * np.sin(2 * np.pi * 120 * t) + 1.0   # 120 Hz, 0.5 g amplitude, on 1 g of gravity
    edges = features.band_edges(rate)
    assert edges == [0, 10, 50, 100, 200, 400]
    f = features.axis_features(x, rate, edges, remove_dc=False)
    assert f["dom_hz"] == 120.0
    assert f["bands"][0] == pytest.approx(1.0, rel=1e-9)          # DC: 1 g squared
    assert f["bands"][3] == pytest.approx(0.125, rel=1e-9)        # A^2 / 2
    assert sum(f["bands"][1:3]) + f["bands"][4] == pytest.approx(0, abs=1e-12)
    assert f["rms"] == pytest.approx(np.sqrt(1.125), rel=1e-12)
    assert f["crest"] == pytest.approx(1.5 / np.sqrt(1.125), rel=1e-6)


def test_features_band_edges_for_slow_rates():
    assert features.band_edges(100) == [0, 10, 50]
    assert features.band_edges(25) == [0, 10, 12.5]
    assert features.band_edges(3200, [0, 100, 1000]) == [0, 100, 1000, 1600]


def test_features_zero_window_is_finite():
    f = features.axis_features(np.zeros(64), 100.0, features.band_edges(100.0), remove_dc=False)
    assert f == {"rms": 0.0, "peak": 0.0, "crest": 0.0, "dom_hz": 0.0, "bands": [0.0, 0.0]}


def test_features_window_record_passes_the_wire_contract():
    x = load("cwru_130_outer_race_007_de_12k.csv")
    # Three axes from one recording: 1200 samples = 100 ms at 12 kHz.
    block = np.stack([x[:1200], x[1200:2400] + 1.0, -x[2400:3600]], axis=1)
    rec = features.window_record(block, RATE, features.band_edges(RATE), remove_dc=True)
    assert rec["len_ms"] == 100 and rec["n"] == 1200 and rec["rate_hz"] == 12000
    rec["dt"] = 0
    payload = codec.encode_features("pump-07", 1, 0, 1751327990000, "ntp", [rec])
    d = codec.decode("fieldwatch/v1/pump-07/telemetry/features", payload, 1751327990000)
    r = d["records"][0]
    assert r["y"]["rms"] == pytest.approx(float(np.std(x[1200:2400])), rel=1e-6)  # gravity removed
    assert sum(r["x"]["bands"]) == pytest.approx(r["x"]["rms"] ** 2, rel=1e-5)
    assert len(json.loads(payload)["w"][0]["z"]["bands"]) == 6
