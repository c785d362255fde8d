"""The source checkout beside the package: what the dev services need of the repo that a wheel does not ship.

From a clone (`pip install -e .`), `fieldwatch/` sits in the checkout and REPO_ROOT is
the clone's top folder, with `firmware/` in it. From a wheel, REPO_ROOT is
site-packages, which holds no firmware: `require_checkout` then raises NoCheckout
with one line that says what is missing, for the tools to print instead of a traceback.
"""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
FIRMWARE = REPO_ROOT / "firmware"


class NoCheckout(RuntimeError):
    """Something needs the Fieldwatch source checkout (firmware/), and this installation has none."""


def has_checkout():
    """True when the package runs from a source checkout (firmware/ and pyproject.toml beside it)."""
    return (FIRMWARE / "main.py").is_file() and (REPO_ROOT / "pyproject.toml").is_file()


def require_checkout(what):
    """Return REPO_ROOT, or raise NoCheckout naming `what` needed it (e.g. "compiling the firmware")."""
    if not has_checkout():
        raise NoCheckout("%s needs the Fieldwatch source checkout (no firmware/ beside %s): run it from a clone "
                         "installed with `pip install -e '.[dev]'`" % (what, REPO_ROOT))
    return REPO_ROOT
