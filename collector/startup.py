"""Start in any order: wait for the database, then the broker, with capped, jittered backoff.

`collector run` serves /healthz and /readyz first, then calls wait_for_database()
(which migrates, so a database that comes up is ready to ingest into) and
wait_for_broker(). Each failed attempt is logged as one line with its reason,
never a traceback; `Startup.waiting_for` says what is awaited, for /readyz and
for systemd's STATUS=. A stop request (SIGTERM) ends either wait at once.
Only what retrying cannot fix ends the start: a wrong storage setting, a
TimescaleDB that is installed but not preloaded (migrate.StorageError), or an
SQL error that is not a connection failure (e.g. missing privileges).
"""

import logging
import random
import threading

import psycopg

log = logging.getLogger("collector.startup")

FIRST_DELAY_S = 0.5     # the first retry comes this long after the first failure
MAX_DELAY_S = 15.0      # the delay doubles up to this cap
JITTER = 0.2            # each delay is drawn from +-20 % around its nominal value


class Backoff:
    """Delays for retries: first_s, doubling up to cap_s, each jittered by +-jitter (a fraction)."""

    def __init__(self, first_s=FIRST_DELAY_S, cap_s=MAX_DELAY_S, jitter=JITTER, uniform=random.uniform):
        self.first_s, self.cap_s, self.jitter, self._uniform = first_s, cap_s, jitter, uniform
        self._nominal = first_s

    def next_s(self):
        """The next delay, seconds (never above cap_s)."""
        nominal = self._nominal
        self._nominal = min(nominal * 2, self.cap_s)
        return min(self.cap_s, nominal * self._uniform(1 - self.jitter, 1 + self.jitter))

    def reset(self):
        """Start again from first_s."""
        self._nominal = self.first_s


class StartupFailed(Exception):
    """A start-up failure that retrying cannot fix; the message says what to do."""


class Startup:
    """What the start-up waits for; shared with the web thread (/readyz) and systemd (STATUS=)."""

    def __init__(self, on_change=None):
        self._lock = threading.Lock()
        self._waiting_for = "start-up"
        self.stop = threading.Event()       # set by SIGTERM/SIGINT: every wait ends at once
        self.on_change = on_change          # called with the new text (systemd STATUS=)

    @property
    def waiting_for(self):
        """None once ingesting, else a short text: 'the database (connection refused)' ..."""
        with self._lock:
            return self._waiting_for

    def waiting(self, text):
        """Record what the start-up now waits for (None: done)."""
        with self._lock:
            changed = text != self._waiting_for
            self._waiting_for = text
        if changed and self.on_change is not None:
            self.on_change(text)


def first_line(error):
    """The first line of an exception's message, or its type's name."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def wait_for_database(startup, migrate_once, where, backoff=None):
    """Call migrate_once() until it succeeds (True) or stop is set (False); raise StartupFailed on what retries cannot fix.

    migrate_once: a function that connects and migrates, raising psycopg errors;
    where: the database, password removed, for the log lines.
    """
    from collector.migrate import StorageError

    backoff = backoff or Backoff()
    attempt = 0
    while not startup.stop.is_set():
        attempt += 1
        try:
            migrate_once()
            if attempt > 1:
                log.info("database %s answers (attempt %d)", where, attempt)
            return True
        except StorageError as e:
            raise StartupFailed(str(e)) from None
        except psycopg.OperationalError as e:
            reason = first_line(e)
        except psycopg.Error as e:
            raise StartupFailed("the database %s refused the migration: %s" % (where, first_line(e))) from None
        delay = backoff.next_s()
        startup.waiting("the database (%s)" % reason)
        log.warning("waiting for the database %s: %s; attempt %d, next in %.1f s", where, reason, attempt, delay)
        startup.stop.wait(delay)
    return False


def wait_for_broker(startup, link, where, backoff=None):
    """Connect `link` (MqttLink.connect) until it succeeds (True) or stop is set (False)."""
    backoff = backoff or Backoff()
    attempt = 0
    while not startup.stop.is_set():
        attempt += 1
        try:
            link.connect()
            if attempt > 1:
                log.info("broker %s answers (attempt %d)", where, attempt)
            return True
        except (OSError, ValueError) as e:   # refused, unreachable, DNS, TLS handshake; paho's ValueError: bad host
            reason = first_line(e)
        delay = backoff.next_s()
        startup.waiting("the broker (%s)" % reason)
        log.warning("waiting for the broker %s: %s; attempt %d, next in %.1f s", where, reason, attempt, delay)
        startup.stop.wait(delay)
    return False
