"""Fetch micropython-lib's umqtt.simple from PyPI into a local cache; print its path.

    python -m fieldwatch.tools.umqtt_fetch            # prints .cache/umqtt (holds umqtt/simple.py)

The PyPI package `micropython-umqtt.simple` (1.3.4) is an sdist without setup.py,
so pip cannot install it; `pip download --no-binary :all:` fetches the tarball and
we unpack `umqtt/` from it. The code stays out of the repository: tests put the
cache directory on MICROPYPATH, and tools/flash.py copies it to a board (unless told
to `mip install` it with --fetch). The cache (.cache/ at the repo root) is not committed.
"""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGE = "micropython-umqtt.simple"
VERSION = "1.3.4"
REPO_ROOT = Path(__file__).resolve().parents[1]
CACHE = REPO_ROOT / ".cache" / "umqtt"


def umqtt_path(cache=CACHE, version=VERSION):
    """Directory holding umqtt/simple.py (downloaded on first use); raises RuntimeError."""
    cache = Path(cache)
    target = cache / "umqtt" / "simple.py"
    if target.is_file():
        return str(cache)
    with tempfile.TemporaryDirectory(prefix="umqtt-") as tmp:
        # The sdist has no setup.py, so pip fails at "preparing metadata" -- after it
        # has unpacked the source. --no-clean keeps that tree in TMPDIR, where we take
        # umqtt/ from (pip's own exit status is therefore ignored).
        env = dict(os.environ, TMPDIR=tmp)
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary",
                            ":all:", "--no-clean", "%s==%s" % (PACKAGE, version),
                            "-d", os.path.join(tmp, "dl")],
                           capture_output=True, text=True, env=env)
        found = sorted(Path(tmp).rglob("umqtt/simple.py"))
        if not found:
            raise RuntimeError("pip download %s==%s left no umqtt/simple.py:\n%s"
                               % (PACKAGE, version, (r.stdout + r.stderr)[-2000:]))
        # umqtt is a namespace package on the board (umqtt.simple, umqtt.robust):
        # 1.3.4 ships no __init__.py and MicroPython imports it fine without one.
        cache.mkdir(parents=True, exist_ok=True)
        if (cache / "umqtt").exists():
            shutil.rmtree(cache / "umqtt")
        shutil.copytree(str(found[0].parent), str(cache / "umqtt"))
    if not target.is_file():
        raise RuntimeError("umqtt/simple.py missing after unpacking into %s" % cache)
    return str(cache)


def main(argv=None):
    """Print the cache directory (fetching first if needed)."""
    print(umqtt_path())
    return 0


if __name__ == "__main__":
    sys.exit(main())
