"""One agent per state directory: an exclusive lock on `<state_dir>/agent.lock`.

Two agents on one state directory would share a boot counter and an outbox and,
with one client id, kick each other off the broker. The agent therefore takes
`flock(LOCK_EX | LOCK_NB)` on the lock file before it bumps the boot counter or
opens the outbox, and holds it for the life of the process. The kernel releases
the lock when the process dies however it dies (SIGKILL, power cut), so there is
never a stale lock to clean up. The holder writes its PID into the file, only so
that the refused agent can name it: the lock decides, never the PID.

The descriptor is not inherited by child processes (Python opens files
close-on-exec), so a child cannot keep the lock after the agent is gone; the
agent's own re-exec (the `reboot` command) releases it and takes it again.
"""

import errno
import fcntl
import os

LOCK_FILE = "agent.lock"


class StateDirInUse(Exception):
    """Another live process holds the state directory's lock."""

    def __init__(self, state_dir, pid):
        self.state_dir = state_dir
        self.pid = pid          # int, or None if the holder has not written it (yet)
        super().__init__("another agent (%s) already uses the state directory %s" % (
            "PID %d" % pid if pid is not None else "PID unknown", state_dir))


def holder_pid(fd):
    """The PID written in the lock file open as fd: an int, or None if absent or unreadable."""
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        return int(text) if text else None
    except (OSError, ValueError):
        return None


class StateLock:
    """The exclusive lock of one state directory, held until release() or the process ends."""

    def __init__(self, state_dir):
        """Take the lock of state_dir; StateDirInUse if another process holds it, OSError if it cannot be made."""
        self.state_dir = state_dir
        self.path = os.path.join(state_dir, LOCK_FILE)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            pid = holder_pid(fd)
            os.close(fd)
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise StateDirInUse(state_dir, pid) from None
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, b"%d\n" % os.getpid(), 0)
        except OSError:
            os.close(fd)
            raise
        self._fd = fd

    def release(self):
        """Give the lock up (the kernel does it anyway when the process ends)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
