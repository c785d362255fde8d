# Record keys (boot, seq), the ESP32's counterpart of edge_agent/keys.py (written
# twice because the state lives elsewhere: a CRC'd file on LittleFS here, a text file
# fsynced with its directory on the Pi). `boot` is the boot counter in the file
# "bootcount" (its name from before this module was called keys.py, kept so that a
# board updated in the field keeps counting where it was).
#
# The boot counter is read, incremented and written back once per boot (one small flash write; LittleFS
# spreads wear). The new value is written to a temporary file and renamed over the
# old one, so a power cut leaves either the old or the new count, never a torn one;
# a CRC guards against a corrupt file, in which case the temporary copy (if a power
# cut hit between write and rename) is tried before starting again at 1.

import os
import struct

from fieldwatch.wire import contract

try:
    from binascii import crc32
except ImportError:  # pragma: no cover
    from zlib import crc32

_FMT = "<II"  # count, crc32 of the count


def _read(path):
    try:
        with open(path, "rb") as f:
            data = f.read(8)
    except OSError:
        return None
    if len(data) != 8:
        return None
    count, crc = struct.unpack(_FMT, data)
    if crc32(data[:4]) & 0xFFFFFFFF != crc:
        return None
    return count


def _write(path, count):
    data = struct.pack("<I", count)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data + struct.pack("<I", crc32(data) & 0xFFFFFFFF))
    os.rename(tmp, path)


def next_boot(path="/bootcount"):
    """Increment and persist the boot counter; return this boot's number (1, 2, ...)."""
    count = _read(path)
    if count is None:
        # first boot, or the file is corrupt: the temporary copy may hold the newer value
        count = _read(path + ".tmp") or 0
    count = (count + 1) & 0xFFFFFFFF
    _write(path, count)
    return count


class Keys:
    """Record keys (boot, seq): seq counts records within this boot from 0.

    If seq would pass 2^32-1 the keys move to a new boot, as the contract demands
    and as the Pi agent's edge_agent/keys.py does.
    """

    def __init__(self, path="/bootcount"):
        self.path = path
        self.boot = next_boot(path)
        self.seq = 0

    def take(self, n=1):
        """Reserve n consecutive keys; return (boot, first seq)."""
        if self.seq + n - 1 > contract.MAX_U32:
            self.boot = next_boot(self.path)
            self.seq = 0
        s = self.seq
        self.seq += n
        return self.boot, s
