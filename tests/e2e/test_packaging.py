"""The distribution as a user gets it (issue 11, part 6).

`python -m build` makes the sdist and then the wheel *from the sdist*, so the sdist
is shown to hold what building needs; the sdist must hold every file of the
checkout (firmware, docs, tests and their data, the two commands); the wheel
installs only unambiguous top-level names; and in a fresh venv with no extras a
console script says which extra to install, in one line, instead of a traceback.
Building fetches setuptools from the package index into build's isolated
environment (pip's cache serves it after the first run).
"""

import subprocess
import sys
import tarfile
import venv
import zipfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """(sdist path, wheel path), built from the checkout."""
    out = tmp_path_factory.mktemp("dist")
    r = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    (sdist,) = out.glob("fieldwatch-*.tar.gz")
    (wheel,) = out.glob("fieldwatch-*.whl")
    return sdist, wheel


@pytest.fixture(scope="module")
def bare_venv(tmp_path_factory, dist):
    """A venv holding the wheel and nothing else (no extras, no dependencies)."""
    where = tmp_path_factory.mktemp("venv") / "v"
    venv.EnvBuilder(with_pip=True).create(where)
    r = subprocess.run([str(where / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", "--no-index",
                        str(dist[1])], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    return where


def _tracked_files():
    r = subprocess.run(["git", "ls-files"], cwd=str(ROOT), capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("not a git checkout: cannot list the files the sdist must hold")
    return [f for f in r.stdout.splitlines() if f != ".gitignore"]


def test_packaging_sdist_holds_every_file_of_the_checkout(dist):
    with tarfile.open(dist[0]) as tar:
        names = {n.split("/", 1)[1] for n in tar.getnames() if "/" in n}
    missing = [f for f in _tracked_files() if f not in names]
    assert not missing, missing[:20]
    for must in ("LICENSE", "run", ".ci/run", "firmware/app.py", "docs/wire.md", "tests/vectors/wire_v1.json"):
        assert must in names


def test_packaging_wheel_top_level_names_are_unambiguous(dist):
    with zipfile.ZipFile(dist[1]) as whl:
        names = whl.namelist()
    top = {n.split("/", 1)[0] for n in names}
    assert top == {"fieldwatch", "collector", "edge_agent", "fieldwatch-0.1.0.dist-info"}, top
    assert "fieldwatch/wire/codec.py" in names and "fieldwatch/tools/demo.py" in names
    assert "fieldwatch-0.1.0.dist-info/licenses/LICENSE" in names
    assert not any(n.startswith("tests/") or "/tests/" in n for n in names)


@pytest.mark.parametrize("script, args, extra", [
    ("collector", ["run"], "collector"),
    ("edge-agent", ["run", "--device-id", "pkg-test", "--hardware", "sim", "--state-dir", "{tmp}"], "agent"),
])
def test_packaging_script_without_its_extra_names_the_extra(bare_venv, tmp_path, script, args, extra):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    r = subprocess.run([str(bare_venv / "bin" / script)] + args, cwd=str(tmp_path),
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr, r.stderr
    lines = r.stderr.strip().splitlines()
    assert lines[-1].endswith("pip install 'fieldwatch[%s]'" % extra), r.stderr
    assert len([ln for ln in lines if "pip install" in ln]) == 1


def test_packaging_tools_run_from_the_wheel_without_the_checkout(bare_venv, tmp_path):
    # cwd elsewhere: nothing of the checkout (tests/ above all) is importable.
    py = str(bare_venv / "bin" / "python")
    for cmd in ([str(bare_venv / "bin" / "fleetctl"), "--help"], [py, "-m", "fieldwatch.tools.demo", "--help"]):
        r = subprocess.run(cmd, cwd=str(tmp_path), capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
        assert "usage:" in r.stdout
