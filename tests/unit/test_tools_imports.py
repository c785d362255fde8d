"""The tools run without the test suite: every fieldwatch.tools module imports in a fresh interpreter
whose sys.path holds neither the checkout nor tests/, and no `tests` (or `harness`) module gets loaded.

Issue 11: `tools/` imported `tests.harness`, so `python -m fieldwatch.tools.demo` failed from a wheel
with `No module named 'tests'`; the dev services now live in fieldwatch.devservices.
"""

import json
import os
import subprocess
import sys
import tempfile

TESTS_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHECKOUT = os.path.dirname(TESTS_DIR)

# Run in a fresh interpreter: import every module of fieldwatch.tools, then report what came of it.
PROBE = r"""
import importlib, json, os, pkgutil, sys
path = list(sys.path)
import fieldwatch.tools
names = sorted("fieldwatch.tools." + m.name for m in pkgutil.iter_modules(fieldwatch.tools.__path__))
failed = {}
for name in names:
    try:
        importlib.import_module(name)
    except Exception as e:
        failed[name] = "%s: %s" % (type(e).__name__, e)
print(json.dumps({
    "modules": names,
    "failed": failed,
    "test_modules": sorted(m for m in sys.modules if m.split(".")[0] in ("tests", "harness")),
    "path": path,
}))
"""


def test_tools_import_nothing_from_tests():
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    with tempfile.TemporaryDirectory() as cwd:      # not the checkout: '' on sys.path must not find tests/
        r = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, env=env, capture_output=True, text=True,
                           timeout=120)
    assert r.returncode == 0, r.stderr
    seen = json.loads(r.stdout.strip().splitlines()[-1])
    path = [os.path.realpath(p or cwd) for p in seen["path"]]
    assert os.path.realpath(TESTS_DIR) not in path and os.path.realpath(CHECKOUT) not in path, path
    assert "fieldwatch.tools.demo" in seen["modules"] and "fieldwatch.tools.sim_board" in seen["modules"], seen
    assert seen["test_modules"] == [], seen["test_modules"]
    assert seen["failed"] == {}, seen["failed"]
