"""The buffer contract's adapter over the Pi's SQLite outbox (edge_agent.outbox), for tests/hil/buffer_cases.py.

Imported by tests/hil/test_buffer_contract.py; run as a script for the cases that
need a process of their own:

    python buffer_outbox.py writer STATE_DIR   # buffer_cases.write_forever, until killed
    python buffer_outbox.py drain STATE_DIR    # buffer_cases.say_drain
"""

import os
import shutil
import sys

from edge_agent.keys import KeySource
from edge_agent.outbox import Outbox

import buffer_cases

DEV = "contract-pi"
T0 = 1751327990000
# A clock that never moves: nothing in flight times out during a case.
FIXED_CLOCK = lambda: 1751327990.0  # noqa: E731


class OutboxBuffer:
    """An Outbox in state directory `state`, seen through the contract's adapter interface."""

    repeats_confirmed_after_restart = False

    def __init__(self, state, capacity=None):
        self.state = state
        self.capacity = capacity
        path = os.path.join(state, "outbox.db")
        keys = KeySource(state, floor=Outbox.max_boot_in(path))
        self.box = Outbox(path, keys, DEV, max_records=capacity or 200000, clock=FIXED_CLOCK)

    def append(self, n):
        """Store n readings in one call; their keys."""
        return self.box.append("readings", [(T0 + i, "ntp", ["temp_c", float(i)]) for i in range(n)])

    def next_to_send(self):
        """The keys of the next batch, marked sent (the agent publishes it in between); None if none."""
        batch = self.box.next_to_send()
        if batch is None:
            return None
        self.box.mark_sent(batch)
        return batch.keys

    def confirm(self, ranges):
        """Apply a delivery confirmation [(boot, first, last)]."""
        self.box.confirm(ranges)

    def rewind(self):
        """A reconnect: everything unconfirmed is to be sent again."""
        self.box.rewind()

    def depth(self):
        """Records held and not confirmed."""
        return self.box.depth()

    @property
    def drops(self):
        """Records the full policy discarded (over the outbox's life)."""
        return self.box.drops

    def restart(self):
        """Close cleanly and open the same state directory again (a new boot)."""
        self.box.close()
        return OutboxBuffer(self.state, self.capacity)

    def power_cut(self, torn):
        """A copy of the state directory as the card holds it now, the WAL's last write torn bytes short.

        Every commit was fsynced (synchronous=FULL), so the files on disk are what a
        power cut leaves; the wal-index (-shm, shared memory) is not copied: SQLite
        rebuilds it from the WAL on open, as after a real power cut.
        """
        image = self.state + "-cut"
        os.makedirs(image)
        for name in os.listdir(self.state):
            if not name.endswith("-shm"):
                shutil.copy2(os.path.join(self.state, name), os.path.join(image, name))
        wal = os.path.join(image, "outbox.db-wal")
        size = os.path.getsize(wal)
        assert size > torn, "no WAL to tear: the last append was checkpointed"
        os.truncate(wal, size - torn)
        self.box._db.close()      # the process is gone: no checkpoint, no close()
        self.box._db = None
        return OutboxBuffer(image, self.capacity)


def main(argv):
    mode, state = argv[1], argv[2]

    def say(line):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    b = OutboxBuffer(state)
    if mode == "writer":
        buffer_cases.write_forever(b, say)
    elif mode == "drain":
        buffer_cases.say_drain(b, say)
        b.box.close()
    else:
        raise SystemExit("usage: buffer_outbox.py writer|drain STATE_DIR")


if __name__ == "__main__":
    main(sys.argv)
