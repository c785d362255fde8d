# NMEA 0183 parser for the GPS UART: bytes in (any chunking), fixes out.
#
# Fixes are dicts in the wire contract's integer units (docs/wire.md, "fix"):
#   time_ms     UTC, ms since the Unix epoch (None until a date is known)
#   mode        2 (2D) or 3 (3D)
#   lat_e7/lon_e7  degrees * 1e7, computed from the digits with integer arithmetic:
#               the ESP32's floats are single precision (24-bit mantissa: about 1e-5
#               degree, ~1 m, at 175 degrees), so no float is used anywhere here.
#   alt_mm      altitude above mean sea level (GGA), mm
#   speed_mmps  speed over ground (RMC, knots), mm/s
#   track_cdeg  course over ground (RMC), centidegrees 0..35999
#   sats        satellites used (GGA)
#   eph_mm      not reported (gpsd's eph needs a UERE model; left out on purpose)
#
# Sentences: GGA, RMC, GSA (mode), ZDA (date), any talker (GP GN GL GA BD GB QZ ...).
# Every sentence must carry a valid "*hh" checksum; anything else is counted and
# dropped. A receiver reports one epoch (one UTC time) as several sentences; the
# parser merges them and emits the fix when a sentence with a new time starts the
# next epoch (or on flush()).
#
# Memory: one preallocated line buffer (_MAX_LINE bytes); a line is split only once it
# is complete and checksummed, so garbage costs no allocation. At 9600 baud a GPS
# sends ~1 KB/s: a 512-byte UART rxbuf covers the longest burst between two polls of
# 0.5 s (see app.py).

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_MAX_LINE = const(120)       # NMEA says 82 with CR LF; some receivers send ~100
_MAX_PENDING = const(8)      # fixes kept until pop(); older ones are dropped
_DAY_MS = const(86400000)

_DOLLAR = const(0x24)
_STAR = const(0x2A)
_CR = const(0x0D)
_LF = const(0x0A)


def _hexval(c):
    if 48 <= c <= 57:
        return c - 48
    if 65 <= c <= 70:
        return c - 55
    if 97 <= c <= 102:
        return c - 87
    return -1


def decimal(field, scale):
    """Parse b'123.456' into round(value * 10**scale) as an int; None if empty or bad."""
    n = len(field)
    if n == 0:
        return None
    i = 0
    neg = False
    if field[0] == 45:  # '-'
        neg = True
        i = 1
    whole = 0
    frac = 0
    fdigits = 0
    seen_dot = False
    seen_digit = False
    while i < n:
        c = field[i]
        if c == 46:  # '.'
            if seen_dot:
                return None
            seen_dot = True
        elif 48 <= c <= 57:
            seen_digit = True
            if seen_dot:
                frac = frac * 10 + c - 48
                fdigits += 1
            else:
                whole = whole * 10 + c - 48
        else:
            return None
        i += 1
    if not seen_digit:
        return None
    # value = whole + frac / 10**fdigits, scaled by 10**scale, rounded half up
    if fdigits <= scale:
        v = whole * 10 ** scale + frac * 10 ** (scale - fdigits)
    else:
        d = 10 ** (fdigits - scale)
        v = whole * 10 ** scale + (frac + d // 2) // d
    return -v if neg else v


def _angle_e7(field, hemi, deg_digits):
    # ddmm.mmmm (lat, 2 degree digits) or dddmm.mmmm (lon, 3): degrees * 1e7, exact
    # to the last printed digit: minutes * 1e7 / 60 with integer rounding.
    if len(field) < deg_digits + 2 or not hemi:
        return None
    deg = decimal(field[:deg_digits], 0)
    mins = field[deg_digits:]
    dot = mins.find(b".")
    fd = 0 if dot < 0 else len(mins) - dot - 1
    m = decimal(mins, fd)  # minutes * 10**fd, exact
    if deg is None or m is None or deg < 0 or m < 0:
        return None
    scale = 10 ** fd
    v = deg * 10000000 + (m * 10000000 + 30 * scale) // (60 * scale)
    h = hemi[0]
    if h == 83 or h == 87:  # 'S' 'W'
        v = -v
    elif h != 78 and h != 69:  # not 'N' 'E'
        return None
    return v


def _tod_ms(field):
    # hhmmss(.sss) -> ms of the day
    if len(field) < 6:
        return None
    hh = decimal(field[0:2], 0)
    mm = decimal(field[2:4], 0)
    ss = decimal(field[4:], 3)
    if hh is None or mm is None or ss is None or hh > 23 or mm > 59 or ss >= 61000 or ss < 0:
        return None
    return (hh * 3600 + mm * 60) * 1000 + ss


def days_from_civil(y, m, d):
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    mp = m + 9 if m <= 2 else m - 3
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _date_days(field):
    # ddmmyy -> days since epoch; two-digit years are 2000..2099 (RMC has no century)
    if len(field) != 6:
        return None
    d = decimal(field[0:2], 0)
    m = decimal(field[2:4], 0)
    y = decimal(field[4:6], 0)
    if d is None or m is None or y is None or not 1 <= m <= 12 or not 1 <= d <= 31:
        return None
    return days_from_civil(2000 + y, m, d)


class NMEAParser:
    """Feed bytes from the GPS UART; pop() returns completed fixes."""

    def __init__(self):
        self._line = bytearray(_MAX_LINE)   # allocated once
        self._n = 0
        self._in_line = False
        self.pending = []
        # Counters (reported as health)
        self.sentences = 0
        self.bad_checksum = 0
        self.overlong = 0
        self.ignored = 0
        # Date state: last date seen (days since epoch) and the time of day it went with
        self._days = None
        self._days_tod = None
        self.last_time_ms = None   # UTC of the newest valid (status A) epoch
        self._reset_epoch(None)

    def _reset_epoch(self, tod):
        self._tod = tod
        self._lat = None
        self._lon = None
        self._alt = None
        self._speed = None
        self._track = None
        self._sats = None
        self._quality = None   # GGA fix quality (0 = none)
        self._status = None    # RMC status: True for 'A'
        self._gsa_mode = None  # GSA 1/2/3

    # ---- bytes in ----------------------------------------------------------
    def feed(self, data):
        """Consume a chunk of bytes (any length, any split)."""
        line = self._line
        for c in data:
            if c == _DOLLAR:
                # A '$' always starts a sentence: resynchronises after noise or a cut line
                self._in_line = True
                line[0] = c
                self._n = 1
            elif not self._in_line:
                continue
            elif c == _CR or c == _LF:
                self._in_line = False
                self._sentence(self._n)
            elif c < 32 or c > 126:
                self._in_line = False  # binary noise inside a line: drop it
                self.ignored += 1
            elif self._n >= _MAX_LINE:
                self._in_line = False
                self.overlong += 1
            else:
                line[self._n] = c
                self._n += 1

    def flush(self):
        """End the current epoch (e.g. at end of input) and emit its fix if any."""
        self._finish_epoch()

    def pop(self):
        """The oldest completed fix (a dict), or None."""
        if self.pending:
            return self.pending.pop(0)
        return None

    # ---- sentences -----------------------------------------------------------
    def _sentence(self, n):
        line = self._line
        # "$ttSSS,...*hh": checksum is the XOR of everything between '$' and '*'
        if n < 10 or line[n - 3] != _STAR:
            self.bad_checksum += 1
            return
        hi = _hexval(line[n - 2])
        lo = _hexval(line[n - 1])
        x = 0
        for i in range(1, n - 3):
            x ^= line[i]
        if hi < 0 or lo < 0 or x != (hi << 4 | lo):
            self.bad_checksum += 1
            return
        self.sentences += 1
        # The sentence is good: from here on allocating is fine (a few per second).
        f = bytes(line[1:n - 3]).split(b",")
        kind = f[0][-3:]
        if kind == b"GGA":
            self._gga(f)
        elif kind == b"RMC":
            self._rmc(f)
        elif kind == b"GSA":
            self._gsa(f)
        elif kind == b"ZDA":
            self._zda(f)
        else:
            self.ignored += 1

    def _epoch(self, tod):
        # A sentence stamped tod: same epoch, or the start of the next one
        if tod != self._tod:
            self._finish_epoch()
            self._reset_epoch(tod)

    def _gga(self, f):
        if len(f) < 10:
            return
        tod = _tod_ms(f[1])
        if tod is None:
            return
        self._epoch(tod)
        q = decimal(f[6], 0)
        self._quality = q
        if q:
            self._lat = _angle_e7(f[2], f[3], 2)
            self._lon = _angle_e7(f[4], f[5], 3)
            self._sats = decimal(f[7], 0)
            self._alt = decimal(f[9], 3)

    def _rmc(self, f):
        if len(f) < 10:
            return
        tod = _tod_ms(f[1])
        if tod is None:
            return
        self._epoch(tod)
        days = _date_days(f[9])
        if days is not None:
            self._days = days
            self._days_tod = tod
        self._status = f[2] == b"A"
        if self._status:
            if self._lat is None:
                self._lat = _angle_e7(f[3], f[4], 2)
                self._lon = _angle_e7(f[5], f[6], 3)
            k = decimal(f[7], 3)  # knots * 1000
            if k is not None:
                # 1 kn = 1852 m / 3600 s: mm/s = knots * 1852000 / 3600, rounded
                self._speed = (k * 1852 + 1800) // 3600
            t = decimal(f[8], 2)
            if t is not None:
                self._track = t % 36000

    def _gsa(self, f):
        if len(f) < 3:
            return
        m = decimal(f[2], 0)
        if m is not None and 1 <= m <= 3:
            # GN receivers send one GSA per constellation; they agree on the mode
            self._gsa_mode = m

    def _zda(self, f):
        # $--ZDA,hhmmss.ss,dd,mm,yyyy,zh,zm
        if len(f) < 5:
            return
        tod = _tod_ms(f[1])
        d = decimal(f[2], 0)
        m = decimal(f[3], 0)
        y = decimal(f[4], 0)
        if tod is None or d is None or m is None or y is None or not 1 <= m <= 12 or not 1 <= d <= 31:
            return
        self._days = days_from_civil(y, m, d)
        self._days_tod = tod

    def _finish_epoch(self):
        tod = self._tod
        if tod is None or self._lat is None or self._lon is None:
            return
        # Like gpsd: a GGA fix with an altitude is 3D (some SiRF receivers send GSA
        # mode 2 alongside it); otherwise GSA's mode; otherwise a valid RMC is 2D.
        if self._quality and self._alt is not None:
            mode = 3
        elif self._gsa_mode is not None:
            mode = self._gsa_mode
        elif self._quality:
            mode = 2
        elif self._status:
            mode = 2
        else:
            mode = 1
        if self._status is False or self._quality == 0 or mode < 2:
            return
        time_ms = None
        if self._days is not None:
            days = self._days
            # A GGA-only epoch just after midnight, dated by the day before: next day
            if self._days_tod is not None and tod < self._days_tod - 43200000:
                days += 1
            time_ms = days * _DAY_MS + tod
            self.last_time_ms = time_ms
        fix = {"time_ms": time_ms, "mode": mode, "lat_e7": self._lat, "lon_e7": self._lon,
               "alt_mm": self._alt if mode == 3 else None, "speed_mmps": self._speed,
               "track_cdeg": self._track, "sats": self._sats}
        if len(self.pending) >= _MAX_PENDING:
            self.pending.pop(0)
        self.pending.append(fix)
        self._lat = None  # emitted once
