"""Running a benchmark (`python -m fieldwatch.tools.bench_*`) the way its smoke tests do."""

import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_json(module, *args, timeout=120):
    """Run `python -m module --json args...` from the checkout: (its one JSON object as a dict, its stderr).

    Fails unless it exits 0 and prints exactly one line on stdout (progress goes to stderr)."""
    r = subprocess.run([sys.executable, "-m", module, "--json", *args], cwd=ROOT, capture_output=True, text=True,
                       timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 1, r.stdout
    return json.loads(lines[0]), r.stderr
