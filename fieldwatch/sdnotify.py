"""A tiny sd_notify(3) of our own: tell systemd we are ready, alive, stopping.

systemd hands a `Type=notify` service the address of its notification socket in
$NOTIFY_SOCKET: a filesystem path, or an abstract socket written with a leading
'@' (which stands for the NUL byte of the real address). A message is one
AF_UNIX datagram of newline-separated VARIABLE=value lines:

    READY=1       start-up finished (the unit becomes "active")
    WATCHDOG=1    the main loop is alive; with WatchdogSec= set, systemd kills and
                  restarts the service when these stop coming
    STOPPING=1    shutting down on purpose (no restart for the pings that stop)
    STATUS=...    one line of free text shown by `systemctl status`

With WatchdogSec= systemd also sets $WATCHDOG_USEC (the interval, µs) and
$WATCHDOG_PID (the process it expects the pings from; when it names another
process the watchdog is not ours). We ping at half the interval, as sd_watchdog_enabled(3)
advises.

Without $NOTIFY_SOCKET (run by hand, in tests, under another supervisor) every
call is a cheap no-op. Nothing here ever raises into the service (the edge agent,
the collector): a notification that cannot be delivered is logged once and dropped.
"""

import logging
import os
import socket
import time

log = logging.getLogger("fieldwatch.sdnotify")


def socket_address(value):
    """The AF_UNIX address for a $NOTIFY_SOCKET value: '@name' -> '\\0name', a path as is; None if unusable."""
    if not value:
        return None
    if value.startswith("@"):
        return "\0" + value[1:]          # an abstract socket: no file, the name starts with NUL
    if value.startswith("/"):
        return value
    return None                           # e.g. systemd's 'vsock:CID:PORT', which we do not speak


def watchdog_interval_s(environ=None, pid=None):
    """The watchdog interval in seconds from $WATCHDOG_USEC, or None when no watchdog is asked of us."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    wpid = env.get("WATCHDOG_PID", "")
    if wpid:
        try:
            if int(wpid) != (os.getpid() if pid is None else pid):
                return None               # the watchdog is meant for another process (e.g. our parent)
        except ValueError:
            return None
    try:
        usec = int(usec)
    except ValueError:
        return None
    return usec / 1e6 if usec > 0 else None


class Notifier:
    """Sends service notifications to systemd; every method is a no-op outside systemd."""

    def __init__(self, environ=None, clock=time.monotonic):
        """Read $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID (from `environ`, default os.environ)."""
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self.address = socket_address(raw)
        if raw and self.address is None:
            log.warning("NOTIFY_SOCKET=%r is not a unix socket address; systemd notifications are off", raw)
        interval = watchdog_interval_s(env)
        self.watchdog_s = interval if self.address else None
        self.ping_every_s = interval / 2.0 if self.watchdog_s else None
        self._clock = clock
        self._next_ping = 0.0
        self._ready_sent = False
        self._failed = False
        self._sock = None
        self.sent = 0                     # datagrams delivered (for tests and diagnostics)

    @property
    def enabled(self):
        """True when systemd (or a test) gave us a notification socket."""
        return self.address is not None

    def notify(self, *lines):
        """Send one message of 'VARIABLE=value' lines; True if it was delivered."""
        if self.address is None:
            return False
        data = "\n".join(lines).encode("utf-8", "replace")
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(data, self.address)
        except OSError as e:
            if not self._failed:          # log the first failure only: this runs in the main loop
                log.warning("systemd notification to %r failed: %s", self.address.replace("\0", "@"), e)
                self._failed = True
            return False
        self._failed = False
        self.sent += 1
        return True

    def ready(self, status=None):
        """READY=1 (once): start-up is finished."""
        if self._ready_sent:
            return False
        self._ready_sent = True
        self._next_ping = self._clock() + (self.ping_every_s or 0.0)
        return self.notify("READY=1", *(["STATUS=" + status] if status else []))

    def heartbeat(self, status=None):
        """Call on every healthy pass of the main loop: READY=1 the first time, then WATCHDOG=1 every half interval.

        status: a STATUS= text, or a function returning one (called only when a message goes out).
        """
        if self.address is None:
            return False
        if not self._ready_sent:
            return self.ready(status() if callable(status) else status)
        if self.ping_every_s is None:
            return False
        now = self._clock()
        if now < self._next_ping:
            return False
        self._next_ping = now + self.ping_every_s
        status = status() if callable(status) else status
        return self.notify("WATCHDOG=1", *(["STATUS=" + status] if status else []))

    def stopping(self, status=None):
        """STOPPING=1: we are shutting down on purpose."""
        return self.notify("STOPPING=1", *(["STATUS=" + status] if status else []))

    def status(self, text):
        """STATUS=text: one line for `systemctl status`."""
        return self.notify("STATUS=" + text.replace("\n", " "))

    def close(self):
        """Close the socket (a later call reopens it)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None
