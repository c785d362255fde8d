# The buffer contract's adapter over the ESP32's flash ring (firmware/ring.py), for
# tests/hil/buffer_cases.py; run by tests/hil/test_buffer_contract.py on the
# MicroPython Unix port (100 KB heap), a real directory standing in for LittleFS:
#
#   micropython buffer_ring.py case NAME DIR   # run one case; prints "ok NAME"
#   micropython buffer_ring.py writer DIR      # buffer_cases.write_forever, until killed
#   micropython buffer_ring.py drain DIR       # buffer_cases.say_drain
#
# Keys come from keys.Keys as firmware/app.py takes them (a new boot per
# start). Each record is one ring entry (n = 1) of kind
# "readings" whose payload names its key, checked when it is handed out.

import os
import sys
import time

import keys
import buffer_cases
from ring import Ring

_PER_SEGMENT = 5        # entries of 30 bytes (14 head + 12 payload + 4 CRC) per segment


def _payload(boot, seq):
    return ("%05d:%06d" % (boot % 100000, seq)).encode()


def _copy(src, dst):
    with open(src, "rb") as f:
        data = f.read()
    with open(dst, "wb") as f:
        f.write(data)


class RingBuffer:
    """A Ring in DIR/outbox with its boot counter in DIR/bootcount, seen through the contract's adapter."""

    repeats_confirmed_after_restart = True

    def __init__(self, root, capacity=None):
        self.root = root
        self.capacity = capacity
        try:
            os.mkdir(root)
        except OSError:
            pass
        self.keys = keys.Keys(root + "/bootcount")
        if capacity is None:
            self.ring = Ring(root + "/outbox", segment_bytes=8192, max_segments=50, window=1000)
        else:
            # at most capacity entries: max_segments full segments, the open one counted
            self.ring = Ring(root + "/outbox", segment_bytes=30 * _PER_SEGMENT,
                             max_segments=capacity // _PER_SEGMENT, window=1000)

    def append(self, n):
        """Store n records, one entry each; their keys."""
        out = []
        for _ in range(n):
            boot, seq = self.keys.take(1)
            self.ring.append("readings", boot, seq, 1, _payload(boot, seq))
            out.append((boot, seq))
        return out

    def next_to_send(self):
        """The keys of the entry handed out (in flight now); None if none."""
        got = self.ring.next_to_send(0)
        if got is None:
            return None
        kind, boot, seq, n, payload = got
        assert kind == "readings" and n == 1 and payload == _payload(boot, seq), got
        return [(boot, seq)]

    def confirm(self, ranges):
        """Apply a delivery confirmation [(boot, first, last)]."""
        self.ring.confirm(ranges)

    def rewind(self):
        """A reconnect: everything unconfirmed is to be sent again."""
        self.ring.rewind()

    def depth(self):
        """Entries held and not confirmed (one record each here)."""
        return self.ring.depth()

    @property
    def drops(self):
        """Records the full policy discarded since this start."""
        return self.ring.drops

    def restart(self):
        """Close cleanly and open the same directory again (a new boot)."""
        self.ring.close()
        return RingBuffer(self.root, self.capacity)

    def power_cut(self, torn):
        """A copy of the directory as flash holds it now, the newest segment's last write torn bytes short."""
        image = self.root + "-cut"
        os.mkdir(image)
        os.mkdir(image + "/outbox")
        for name in os.listdir(self.root):
            if name.startswith("bootcount"):
                _copy(self.root + "/" + name, image + "/" + name)
        segs = sorted(os.listdir(self.root + "/outbox"))
        for name in segs:
            _copy(self.root + "/outbox/" + name, image + "/outbox/" + name)
        last = image + "/outbox/" + segs[-1]
        with open(last, "rb") as f:
            data = f.read()
        assert len(data) > torn
        with open(last, "wb") as f:
            f.write(data[:len(data) - torn])
        return RingBuffer(image, self.capacity)


def _say(line):
    sys.stdout.write(line + "\n")


def main(argv):
    mode = argv[1]
    if mode == "case":
        name, root = argv[2], argv[3]
        made = [0]

        def make(capacity=None):
            made[0] += 1
            return RingBuffer("%s/b%d" % (root, made[0]), capacity)
        buffer_cases.case(name)(make)
        _say("ok " + name)
    elif mode == "writer":
        # 5 ms every 10 appends: about 2,000 entries a second, well within the ring's
        # 50 segments of 8 KB whatever the kill's timing (a drop would be a lost record)
        buffer_cases.write_forever(RingBuffer(argv[2]), _say, lambda i: i % 10 or time.sleep_ms(5))
    elif mode == "drain":
        b = RingBuffer(argv[2])
        buffer_cases.say_drain(b, _say)
        b.ring.close()
    else:
        raise SystemExit("usage: buffer_ring.py case NAME DIR | writer DIR | drain DIR")


main(sys.argv)
