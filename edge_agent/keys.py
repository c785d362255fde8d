"""Record keys (boot, seq): the idempotency key of every record the agent makes.

`boot` is a counter in the state directory, incremented and written back durably
exactly once when a process starts (temp file + fsync + rename + fsync of the
directory), before the first key of that boot is handed out. `seq` counts records
from 0 within the boot, one counter for all record kinds (docs/wire.md, "Record
keys"). A key is therefore unique across restarts, crashes and power cuts:

* a crash after the counter was written wastes a boot number, never reuses one;
* keys handed out but never committed (the process died first) leave a gap at the
  end of a boot, never a collision.

A first start (no counter file) does not begin at 0 when the system clock is set:
it begins at the number of seconds since the epoch. A Pi whose SD card was
re-imaged or whose state directory was wiped then still never reuses a boot
number it had before (that would make its new records look like duplicates and
be dropped), unless it had averaged more than one start per second.

If seq would pass 2^32-1 the source moves to a new boot, as the contract demands.
If the counter file is unreadable (it never is after a completed rename, but a
disk can be restored from an old image or edited by hand) the source refuses to
guess low: it takes max(floor + 1, seconds since the epoch), which is above every
counter a device can have reached by counting starts.

The ESP32's firmware/keys.py hands out the same keys the same way; it is a copy of
its own because its counter lives in a CRC'd file on LittleFS under MicroPython.
"""

import logging
import os
import time

from fieldwatch.wire.contract import MAX_U32, MIN_TS_MS

log = logging.getLogger("edge_agent.keys")

BOOT_FILE = "boot"


class KeyStateError(Exception):
    """The state directory cannot hold the boot counter (unwritable, not a directory)."""


def write_atomically(path, text):
    """Replace file `path` with `text` durably: temp file, fsync, rename, fsync of the directory."""
    directory = os.path.dirname(os.path.abspath(path))
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        os.write(fd, text.encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def read_boot(state_dir):
    """The boot counter stored in state_dir: an int, None if absent; ValueError if unreadable."""
    path = os.path.join(state_dir, BOOT_FILE)
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return None
    value = int(text.strip())  # ValueError for anything but a plain integer
    if not 0 <= value <= MAX_U32:
        raise ValueError("boot counter %d outside 0..2^32-1" % value)
    return value


CLOCK_SANE_AFTER = MIN_TS_MS // 1000  # s; before the contract's earliest sane time the clock is not set


def first_boot(now):
    """The boot number of a device's first start: seconds since the epoch if the clock is set, else 0."""
    return int(now) if CLOCK_SANE_AFTER <= now <= MAX_U32 else 0


class KeySource:
    """Hands out (boot, seq) keys; creating one starts a new boot (once per process)."""

    def __init__(self, state_dir, floor=None):
        """floor: the highest boot known elsewhere (e.g. in the outbox); the new boot is above it."""
        self.state_dir = state_dir
        try:
            os.makedirs(state_dir, exist_ok=True)
        except OSError as e:
            raise KeyStateError("cannot create state directory %s: %s" % (state_dir, e.strerror)) from None
        self.first_start = False
        try:
            stored = read_boot(state_dir)
        except (ValueError, OSError) as e:
            fallback = max((floor or 0) + 1, int(time.time()))
            log.error("boot counter in %s is unreadable (%s); continuing at boot %d, above any counted boot",
                      os.path.join(state_dir, BOOT_FILE), e, fallback)
            stored = fallback - 1
        if stored is None:
            self.first_start = True
            stored = first_boot(time.time()) - 1
        if floor is not None and floor > stored:
            log.warning("boot counter %d is behind the outbox (boot %d); continuing above it", stored, floor)
            stored = floor
        self.boot = None
        self.seq = 0
        self._new_boot(stored + 1)

    def _new_boot(self, boot):
        if boot > MAX_U32:
            raise KeyStateError("boot counter exhausted (2^32 boots); give the device a new id")
        try:
            write_atomically(os.path.join(self.state_dir, BOOT_FILE), "%d\n" % boot)
        except OSError as e:
            raise KeyStateError("cannot write the boot counter in %s: %s" % (self.state_dir, e.strerror)) from None
        self.boot = boot
        self.seq = 0

    def take(self, n):
        """Reserve n consecutive keys; returns (boot, first_seq). Moves to a new boot at 2^32."""
        if n < 1:
            raise ValueError("take needs n >= 1")
        if self.seq + n - 1 > MAX_U32:
            self._new_boot(self.boot + 1)
        first = self.seq
        self.seq += n
        return self.boot, first

    @property
    def next_key(self):
        """The key the next take() will start at (status messages report its seq)."""
        return self.boot, self.seq
