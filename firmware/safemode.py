# Crash-loop guard: boot.py counts boots that did not reach "healthy"; after
# MAX_CRASHES of them in a row the application is skipped (safe mode), so the REPL
# stays free for mpremote. app.py calls healthy() after it has run for a while;
# `mpremote exec "import safemode; safemode.clear()"` leaves safe mode.

MAX_CRASHES = 3
PATH = "crashes"   # relative: "/" on a board, the state dir on a simulated one


def _read(path):
    try:
        with open(path) as f:
            return int(f.read() or 0)
    except (OSError, ValueError):
        return 0


def _write(path, n):
    with open(path, "w") as f:
        f.write(str(n))


def boot(path=PATH):
    """Count this boot as a possible crash; return the count (one flash write)."""
    n = _read(path) + 1
    _write(path, n)
    return n


def active(path=PATH, limit=MAX_CRASHES):
    """True when the last `limit` boots all failed to become healthy."""
    return _read(path) > limit


def healthy(path=PATH):
    """The application runs fine: reset the crash count."""
    if _read(path):
        _write(path, 0)


clear = healthy
