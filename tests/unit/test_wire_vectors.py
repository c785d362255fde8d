"""The wire contract's golden vectors under CPython: one test per vector.

tests/vectors/check_vectors.py does the work (the same file runs under MicroPython
in tests/hil/test_wire_micropython.py); this module only parametrizes it, and checks
that the vector file, the codec and docs/wire.md still agree with each other.
"""

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fieldwatch.wire import codec

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors" / "wire_v1.json"
CHECKER = ROOT / "tests" / "vectors" / "check_vectors.py"
DOC = ROOT / "docs" / "wire.md"


def _load_checker():
    spec = importlib.util.spec_from_file_location("check_vectors", CHECKER)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


cv = _load_checker()
CASES = list(cv.iter_cases(str(VECTORS)))
# Every WireError code the contract's modules raise (fail("code", ...)).
ERROR_CODES = sorted(set(re.findall(r'\bfail\(\s*"(\w+)"', "".join(
    p.read_text() for p in sorted((ROOT / "fieldwatch" / "wire").glob("*.py"))))))


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_vector(case):
    why = cv.run_case(case)
    assert why is None, why


# ---- the vector file itself ---------------------------------------------------------

def test_file_is_one_json_list_with_one_case_per_line():
    whole = json.loads(VECTORS.read_text(encoding="utf-8"))
    assert whole == CASES
    lines = VECTORS.read_text(encoding="utf-8").split("\n")
    assert lines[0] == "[" and lines[-2:] == ["]", ""]
    assert len(lines) == len(CASES) + 3


def test_names_are_unique_and_plain():
    names = [c["name"] for c in CASES]
    assert len(names) == len(set(names))
    for n in names:
        assert re.fullmatch(r"[a-z0-9_]+/[A-Za-z0-9_]+", n), n


KEYS = {"name", "heavy", "topic", "now_ms", "payload_text", "payload_hex", "expect", "error", "encode"}


def test_every_case_is_well_formed():
    for c in CASES:
        assert set(c) <= KEYS, (c["name"], set(c) - KEYS)
        keys = list(c)
        assert keys[0] == "name"
        if c.get("heavy"):
            assert keys[1] == "heavy", c["name"]  # --device skips it without reading the line
        if "encode" in c:
            assert c["encode"]["fn"].startswith("encode_")
            assert ("expect" in c) + ("error" in c) == 1, c["name"]
        else:
            assert ("payload_text" in c) + ("payload_hex" in c) == 1, c["name"]
            assert ("expect" in c) + ("error" in c) == 1, c["name"]
            assert "topic" in c and "now_ms" in c, c["name"]
        if "error" in c:
            assert c["error"] in ERROR_CODES, c["name"]


def test_every_error_code_has_a_vector():
    covered = {c["error"] for c in CASES if "error" in c}
    assert set(ERROR_CODES) - covered == set()
    assert len(ERROR_CODES) == 16


def test_every_kind_has_valid_and_invalid_vectors():
    from fieldwatch.wire import topics
    for kind in topics.SUFFIX:
        mine = [c for c in CASES if "encode" not in c and topics.parse(c["topic"]) == ("pump-07", kind)]
        assert any("expect" in c for c in mine), kind
        assert any("error" in c for c in mine), kind


def test_every_encoder_has_a_vector():
    encoders = {n for n in dir(codec) if n.startswith("encode_")}
    used = {c["encode"]["fn"] for c in CASES if "encode" in c}
    assert encoders == used


def test_checker_cli_counts_every_vector():
    r = subprocess.run([sys.executable, str(CHECKER), str(VECTORS)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().splitlines()[-1] == "%d passed, 0 failed" % len(CASES)


def test_checker_cli_fails_on_a_wrong_vector(tmp_path):
    bad = dict(CASES[0], name="broken/on_purpose")
    bad["expect"] = dict(bad["expect"], seq=bad["expect"]["seq"] + 1)
    path = tmp_path / "bad.json"
    path.write_text("[\n" + json.dumps(CASES[0]) + ",\n" + json.dumps(bad) + "\n]\n", encoding="utf-8")
    r = subprocess.run([sys.executable, str(CHECKER), str(path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    out = r.stdout.strip().splitlines()
    assert out[0].startswith("FAIL broken/on_purpose: $.seq")
    assert out[-1] == "1 passed, 1 failed"


# ---- the checker's comparison rules --------------------------------------------------

@pytest.mark.parametrize("got, want, same", [
    (21.5, 21.5, True),
    (0.1 + 0.2, 0.3, True),                 # within 1e-9 relative
    (1.0, 1.000001, False),
    (1, 1.0, False),                        # int is not float
    (True, 1, False),                       # bool is not int
    ((12, 1, 2), [12, 1, 2], False),        # raw tuples only match after _normalise
    ({"a": 1}, {"a": 1, "b": None}, False),  # a missing key is a difference
])
def test_diff(got, want, same):
    assert (cv.diff(got, want) is None) is same


def test_segments():
    assert cv.text_bytes(["ab", ["c", 3], "d"]) == b"abcccd"
    assert cv.hex_bytes([["00ff", 2]]) == b"\x00\xff\x00\xff"
    assert cv.text_bytes("\u00e9") == b"\xc3\xa9"


# ---- docs/wire.md ----------------------------------------------------------------------

def test_doc_lists_every_error_code_and_enumeration():
    doc = DOC.read_text(encoding="utf-8")
    table = doc[doc.index("## Error codes"):doc.index("## Versioning")]
    for code in ERROR_CODES:
        assert "| `%s` |" % code in table, code
    for values in (codec.TIME_QUALITY, codec.LOG_LEVELS, codec.STATES, codec.RESET_REASONS, codec.COMMANDS):
        for v in values:
            assert "`%s`" % v in doc, v
    assert "6.25, 12.5, 25, 50, 100, 200, 400, 800, 1600, 3200" in doc


def test_doc_wave_size_arithmetic():
    # docs/wire.md: 1024 samples x 3 axes, 7-character id = 6184 bytes, ~2.01 B/axis-sample.
    payload = codec.encode_wave("pump-07", 1, 0, 0, "none", 3200, 0.0039, 2, 3, 1024, bytes(6144))
    assert len(payload) == codec.WAVE_HEADER_SIZE + 7 + 6144 == 6184
    assert round(len(payload) / 3072, 2) == 2.01 < 2.5


# ---- delivery-confirmation helpers ---------------------------------------------------

def test_ranges_of_and_covers():
    keys = [(12, 102), (12, 100), (12, 101), (12, 101), (11, 7), (12, 200)]
    ranges = codec.ranges_of(keys)
    assert ranges == [(11, 7, 7), (12, 100, 102), (12, 200, 200)]
    for b, s in keys:
        assert codec.covers(ranges, b, s)
    assert not codec.covers(ranges, 12, 103)
    assert not codec.covers(ranges, 11, 100)
    # an ack built from them decodes back to the same ranges
    msg = codec.decode("fieldwatch/v1/pump-07/ack", codec.encode_ack("pump-07", ranges))
    assert msg["ranges"] == ranges
