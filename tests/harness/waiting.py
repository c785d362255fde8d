"""Polling until something holds: the one wait helper of the tests that watch a running system."""

import time


def wait_for(predicate, timeout=20, what="condition", interval=0.02):
    """Poll predicate() until it returns something truthy (returned), or fail after timeout seconds.

    what names the awaited thing in the failure; a callable is asked at failure time, so it can
    show the state that was seen last.
    """
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = predicate()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("timed out after %s s waiting for %s" % (timeout, what() if callable(what) else what))
