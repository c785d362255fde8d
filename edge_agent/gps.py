"""GPS fixes from gpsd, through gpsd-py3, that never take the agent down.

gpsd-py3 0.3.0 has three habits this module designs around:

* its connection lives in module globals (gpsd.gpsd_socket, gpsd.gpsd_stream)
  and it has no reconnect: GpsReader owns those globals (one reader per
  process), closes them itself, and calls gpsd.connect() again, with
  exponential backoff and jitter, whenever gpsd goes away (restart, crash,
  not started yet);
* its GpsResponse reads the deprecated `alt` and keeps nothing else of the
  report: we read the raw TPV and take `altMSL` (or `altHAE` - `geoidSep`),
  falling back to `alt` only for a gpsd older than 3.20;
* its get_current() polls gpsd (`?POLL;`), which returns gpsd's fix *while a
  reporting cycle is still being assembled* (replaying the Quectel log through
  gpsfake, about half of the polled states matched no TPV gpsd ever reported:
  altitude not yet merged, speed estimated from two positions), and it raises
  IndexError when gpsd has no fix yet. We use gpsd.connect() for the
  handshake, then ask gpsd to stream its TPV reports (`?WATCH` with json) over
  the same connection and read them ourselves.

A reporting cycle (an *epoch*) produces several TPV reports with the same time,
each more complete than the last (RMC, then GGA, then GSA...). The reader hands
out the last report of each epoch, once the next epoch starts (or the connection
ends), so a fix is always gpsd's complete decoding of that second.

Pure helpers (tpv_time_ms, fix_from_tpv, EpochTracker, choose_time) do no I/O;
GpsReader is the thread that talks to gpsd; FixRecorder hands the agent the newest
fix every gps.interval_s, stamped.
"""

import datetime
import json
import logging
import math
import random
import socket
import sys
import threading
import time
from collections import deque

from fieldwatch.wire import codec

log = logging.getLogger("edge_agent.gps")

MAX_PENDING_FIXES = 3600          # completed fixes kept for the agent (an hour at 1 Hz)
_READER_LOCK = threading.Lock()   # gpsd-py3's globals allow one connection per process

# Wire contract ranges of the fix fields (docs/wire.md, "fix"): name -> (lo, hi).
_RANGES = codec.FIX_RANGES


# ---- pure conversion -----------------------------------------------------------------

def tpv_time_ms(text):
    """Epoch ms of a gpsd ISO 8601 time ('2020-07-11T22:37:45.000Z'); None if absent or unreadable."""
    if not isinstance(text, str) or not text.endswith("Z"):
        return None
    body = text[:-1]
    frac_ms = 0
    if "." in body:
        body, frac = body.split(".", 1)
        if not frac.isdigit():
            return None
        frac_ms = int(round(int(frac) / 10 ** len(frac) * 1000))
    try:
        t = datetime.datetime.strptime(body, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.timezone.utc)
    except ValueError:
        return None
    return int(t.timestamp()) * 1000 + frac_ms


def _number(tpv, key):
    # A finite JSON number from the report, else None (a missing or odd field is not an error).
    v = tpv.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
        return None
    return float(v)


def _scaled(name, value, factor):
    # value * factor rounded to an integer, or None when absent or outside the contract's range.
    if value is None:
        return None
    n = int(round(value * factor))
    lo, hi = _RANGES[name]
    return n if lo <= n <= hi else None


def altitude_msl(tpv):
    """Altitude above mean sea level, m, from a TPV: altMSL, else altHAE - geoidSep, else the deprecated alt."""
    msl = _number(tpv, "altMSL")
    if msl is not None:
        return msl
    hae, sep = _number(tpv, "altHAE"), _number(tpv, "geoidSep")
    if hae is not None and sep is not None:
        return hae - sep
    if hae is None:
        # gpsd < 3.20 sends only `alt`, and it is MSL there; 3.20+ sends altMSL beside it.
        return _number(tpv, "alt")
    return None  # only an ellipsoid height without the geoid separation: not MSL, so not sent


def fix_from_tpv(tpv, sats=None):
    """The wire `fix` fields (a dict without dt, absent fields left out) of a gpsd TPV report, or None.

    None when the report is not a 2D/3D fix or lacks a usable latitude/longitude.
    """
    if not isinstance(tpv, dict):
        return None
    mode = tpv.get("mode")
    if mode not in (2, 3) or isinstance(mode, bool):
        return None
    lat = _scaled("lat_e7", _number(tpv, "lat"), 1e7)
    lon = _scaled("lon_e7", _number(tpv, "lon"), 1e7)
    if lat is None or lon is None:
        return None
    body = {"mode": mode, "lat_e7": lat, "lon_e7": lon}
    track = _number(tpv, "track")
    if track is not None:
        track = track % 360.0
        if int(round(track * 100)) == 36000:
            track = 0.0
    optional = {
        "alt_mm": _scaled("alt_mm", altitude_msl(tpv), 1000) if mode == 3 else None,
        "speed_mmps": _scaled("speed_mmps", _number(tpv, "speed"), 1000),
        "track_cdeg": _scaled("track_cdeg", track, 100),
        "eph_mm": _scaled("eph_mm", _number(tpv, "eph"), 1000),
        "epv_mm": _scaled("epv_mm", _number(tpv, "epv"), 1000) if mode == 3 else None,
        "sats": sats if isinstance(sats, int) and not isinstance(sats, bool) and 0 <= sats <= 255 else None,
    }
    body.update((k, v) for k, v in optional.items() if v is not None)
    return body


class Fix:
    """One completed fix: the wire body (without dt), gpsd's time (epoch ms or None), when it arrived."""

    __slots__ = ("body", "gps_ms", "mono", "ept_s")

    def __init__(self, body, gps_ms, mono, ept_s=None):
        self.body = body
        self.gps_ms = gps_ms      # time of the fix by the receiver (UTC epoch ms), None if it sent none
        self.mono = mono          # time.monotonic() when its last report arrived
        self.ept_s = ept_s        # gpsd's estimated time error, s (not on the wire; for logs and tests)

    def __repr__(self):
        return "<Fix %s %r>" % (self.gps_ms, self.body)


class EpochTracker:
    """Turns gpsd's stream of TPV reports into one Fix per epoch: the epoch's last report."""

    def __init__(self):
        self._tpv = None          # last report of the epoch in progress
        self._mono = None
        self._last_time = object()
        self.sats = None          # satellites used, from the latest SKY report

    def feed(self, tpv, mono):
        """Take one TPV report; returns the Fix of the epoch it closed, or None."""
        done = None
        if self._tpv is not None and tpv.get("time") != self._tpv.get("time"):
            done = self._close()
        self._tpv, self._mono = tpv, mono
        return done

    def flush(self):
        """Close the epoch in progress (the connection ended); its Fix or None."""
        done = self._close() if self._tpv is not None else None
        self._tpv = None
        return done

    def _close(self):
        tpv, self._tpv = self._tpv, None
        t = tpv.get("time")
        if t is not None and t == self._last_time:
            return None           # that epoch was handed out already (flushed, then reported again)
        body = fix_from_tpv(tpv, self.sats)
        if body is None:
            return None
        self._last_time = t
        return Fix(body, tpv_time_ms(t), self._mono, _number(tpv, "ept"))


def choose_time(gps_ms, local_ms, local_tq):
    """(ms, tq) to stamp a fix with: the receiver's time (tq gps) when plausible, else the local stamp.

    Plausible: not before 2020, and -- when the local clock is set -- within one day of it
    (a receiver with a week-rollover bug, or a replayed log, is off by years).
    """
    if gps_ms is not None and gps_ms >= codec.MIN_TS_MS:
        if local_tq == "none" or abs(gps_ms - local_ms) <= codec.MAX_FUTURE_MS:
            return gps_ms, "gps"
    return local_ms, local_tq


class FixRecorder:
    """Every interval_s, the newest fix a GpsReader completed since the last time, stamped for a `fix` record."""

    def __init__(self, reader, interval_s, clock, counters):
        """clock: an edge_agent.clock.Clock; counters (the agent's status health) gets the reader's connect counts."""
        self.reader = reader
        self.interval_s = interval_s
        self.clock = clock
        self.counters = counters
        self._next = 0.0
        self._time_warned = False

    def due(self, until):
        """(ms, tq, body) of the fix to store now, or None (not yet time, no gpsd, no 2D/3D fix).

        Starts the reader's thread on the first call; it ends once the Event `until` is set.
        """
        if not self.reader.started:
            self.reader.start(until=until)   # an absent gpsd is retried there
        now = time.monotonic()
        if now < self._next:
            return None
        self._next = now + self.interval_s
        for name in ("gps_connects", "gps_connect_failures"):
            self.counters[name] = self.reader.counters[name]
        fixes = self.reader.take()
        if not fixes:
            return None
        fix = fixes[-1]
        local_ms, local_tq = self.clock.stamp(fix.mono)
        ms, tq = choose_time(fix.gps_ms, local_ms, local_tq)
        if tq != "gps" and fix.gps_ms is not None and not self._time_warned:
            self._time_warned = True
            log.warning("GPS time %d ms is %.0f s away from our clock: fixes are stamped with our clock (tq %s)",
                        fix.gps_ms, (fix.gps_ms - local_ms) / 1000.0, local_tq)
        return ms, tq, fix.body


# ---- the gpsd connection ---------------------------------------------------------------

class GpsReader:
    """A thread that keeps a gpsd connection up and collects completed fixes; take() hands them out.

    Nothing gpsd does (absent, restarted, killed, no fix, odd reports) raises out of it:
    failures are counted, logged once per outage, and retried with backoff.
    """

    def __init__(self, host="127.0.0.1", port=2947, reconnect_min_s=0.5, reconnect_max_s=30.0,
                 handshake_timeout_s=5.0):
        self.host = host
        self.port = port
        self.reconnect_min_s = reconnect_min_s
        self.reconnect_max_s = max(reconnect_min_s, reconnect_max_s)
        self.handshake_timeout_s = handshake_timeout_s
        self.connected = threading.Event()
        self.last_tpv = None      # the latest TPV report as gpsd sent it (for diagnostics)
        self.counters = {"gps_connects": 0, "gps_connect_failures": 0, "gps_fixes": 0, "gps_bad_reports": 0}
        self._fixes = deque(maxlen=MAX_PENDING_FIXES)
        self._lock = threading.Lock()
        self._halt = threading.Event()
        self._thread = None
        self._sock = None
        self._outage_logged = False

    @property
    def started(self):
        """True once start() has been called."""
        return self._thread is not None

    def start(self, until=None):
        """Start the reader thread (connects in the background); it stops by itself once `until` is set."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="gps", daemon=True)
            self._thread.start()
            if until is not None:
                threading.Thread(target=lambda: until.wait() and self.stop(), name="gps-stop", daemon=True).start()

    def stop(self, timeout=5.0):
        """End the thread and close the connection."""
        self._halt.set()
        self._shutdown_socket()
        if self._thread is not None:
            self._thread.join(timeout)

    def take(self):
        """Every fix completed since the last call, oldest first."""
        with self._lock:
            out = list(self._fixes)
            self._fixes.clear()
        return out

    # ---- the thread ------------------------------------------------------------------
    def _run(self):
        try:
            import gpsd  # noqa: F401  (gpsd-py3, from the agent extras)
        except ImportError as e:
            log.error("GPS disabled: gpsd-py3 is not installed (%s); pip install 'fieldwatch[agent]'", e)
            return
        # gpsd-py3 warns 'No gps devices found' on every connect without a receiver (with a
        # deprecated call); we say that once ourselves ("connected (no device yet)").
        logging.getLogger("gpsd").setLevel(logging.ERROR)
        if not _READER_LOCK.acquire(blocking=False):
            log.error("another GPS reader runs in this process (gpsd-py3 allows one connection); GPS disabled")
            return
        try:
            failures = 0
            while not self._halt.is_set():
                started = time.monotonic()
                try:
                    self._session()
                except Exception as e:  # gpsd absent, refused, garbled handshake: retry later
                    self.counters["gps_connect_failures"] += 1
                    if not self._outage_logged:
                        log.warning("gpsd at %s:%d not usable (%s); no GPS fixes until it is, retrying",
                                    self.host, self.port, _why(e))
                        self._outage_logged = True
                    else:
                        log.debug("gpsd at %s:%d still not usable: %s", self.host, self.port, _why(e))
                finally:
                    self._close_connection()
                if time.monotonic() - started > 10:
                    failures = 0          # that session lasted: start the backoff afresh
                delay = min(self.reconnect_max_s, self.reconnect_min_s * 2 ** min(failures, 20))
                failures += 1
                self._halt.wait(delay * random.uniform(0.5, 1.0))
        finally:
            _READER_LOCK.release()

    def _session(self):
        import gpsd  # gpsd-py3
        tracker = EpochTracker()
        timer = threading.Timer(self.handshake_timeout_s, self._shutdown_socket)
        timer.daemon = True
        timer.start()
        try:
            gpsd.connect(host=self.host, port=self.port)   # VERSION, ?WATCH, DEVICES, WATCH
            self._sock = gpsd.gpsd_socket
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
            stream = gpsd.gpsd_stream
            stream.write('?WATCH={"enable":true,"json":true}\n')
            stream.flush()
        finally:
            timer.cancel()
        if self._halt.is_set():
            return
        self.counters["gps_connects"] += 1
        self.connected.set()
        devices = (gpsd.state.get("devices") or {}).get("devices") or []
        log.info("gpsd %s:%d connected (%s)", self.host, self.port,
                 ", ".join(str(d.get("path")) for d in devices if isinstance(d, dict)) or "no device yet")
        self._outage_logged = False
        try:
            while not self._halt.is_set():
                line = stream.readline()
                if not line:
                    break                      # gpsd closed the connection (restart, kill)
                self._report(line, tracker)
        except (OSError, ValueError) as e:
            log.debug("gpsd connection ended: %s", _why(e))
        finally:
            self.connected.clear()
            self._keep(tracker.flush())
        if not self._halt.is_set():
            log.warning("gpsd %s:%d connection lost; reconnecting", self.host, self.port)
            self._outage_logged = True

    def _report(self, line, tracker):
        try:
            msg = json.loads(line)
        except ValueError:
            self.counters["gps_bad_reports"] += 1
            return
        if not isinstance(msg, dict):
            self.counters["gps_bad_reports"] += 1
            return
        cls = msg.get("class")
        if cls == "TPV":
            self.last_tpv = msg
            self._keep(tracker.feed(msg, time.monotonic()))
        elif cls == "SKY":
            used = msg.get("uSat")
            if used is None and isinstance(msg.get("satellites"), list):
                used = sum(1 for s in msg["satellites"] if isinstance(s, dict) and s.get("used") is True)
            if isinstance(used, int) and not isinstance(used, bool):
                tracker.sats = used

    def _keep(self, fix):
        if fix is None:
            return
        self.counters["gps_fixes"] += 1
        with self._lock:
            self._fixes.append(fix)

    def _shutdown_socket(self):
        # Unblocks a readline() in the thread (stop, or a handshake that takes too long).
        gpsd = sys.modules.get("gpsd")
        sock = self._sock or (gpsd.gpsd_socket if gpsd is not None else None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _close_connection(self):
        # gpsd-py3 never closes what it opened; the next gpsd.connect() would leak it.
        import gpsd
        for obj in (gpsd.gpsd_stream, gpsd.gpsd_socket):
            if obj is not None:
                try:
                    obj.close()
                except OSError:
                    pass
        gpsd.gpsd_stream = gpsd.gpsd_socket = None
        self._sock = None


def _why(e):
    return ("%s: %s" % (type(e).__name__, e)) if str(e) else type(e).__name__


def from_config(conf):
    """A GpsReader for the [gps] section, or None when GPS is disabled."""
    g = conf["gps"]
    if not g["enabled"]:
        return None
    return GpsReader(g["host"], g["port"], reconnect_max_s=g["reconnect_max_s"])
