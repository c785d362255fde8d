"""Register-level model of the Analog Devices ADXL345 accelerometer (datasheet Rev. G).

The model answers register reads and writes the way the chip does, so real drivers
(the Adafruit CircuitPython driver on the edge agent, our own MicroPython driver in the
firmware) run against it unchanged. It is a model of the *chip*, not of any driver.

Written in the common subset of CPython and MicroPython (no typing, dataclasses, enum or
f-strings): the firmware tests run this same file under the MicroPython Unix port behind
a fake ``machine.I2C``.

Time. The chip produces one sample every 1/ODR seconds while it is measuring. The model
has no thread: it is driven by ``advance_to(t)``, which generates every sample due up to
time ``t`` (seconds) from a signal source. Give ``clock`` (e.g. ``time.monotonic``) and
the model advances itself to ``clock()`` on every register access instead, which is what
live demos want; leave it out and tests step time deterministically.

Signal source. A callable returning ``(x, y, z)`` in g. It is called with the sample
time in seconds, or, if the source has a true attribute ``by_index``, with the running
sample index (0, 1, 2, ... over the model's life), which makes every sample identifiable.

Scale. Sensitivity is the datasheet's typical 256 LSB/g (3.9 mg/LSB) at +/-2 g; in
FULL_RES mode it stays 256 LSB/g at every range (10 to 13 bits), in 10-bit mode it
halves with each range step (256, 128, 64, 32 LSB/g). Values clip at the range limits.

Simplifications (documented, deliberate):
- The FIFO holds 32 entries. The real part can hold a 33rd in its output filter
  (datasheet, "FIFO" section); the model does not.
- Tap, activity, inactivity and free-fall detection are not modelled: their registers
  are plain storage and their INT_SOURCE bits stay 0. The self-test force is not modelled.
- LOW_POWER (BW_RATE bit 4) does not change the noise or the rate; AUTO_SLEEP and
  LINK (POWER_CTL) are stored only.
- Sleep mode (POWER_CTL bit 2) samples at the wake-up rate (8, 4, 2 or 1 Hz).
"""

try:
    from micropython import const
except ImportError:  # CPython without Blinka's micropython shim

    def const(x):
        """Return x unchanged (stand-in for micropython.const)."""
        return x


import struct

# ---------------------------------------------------------------------------
# Register map (datasheet Rev. G, Table 19). Names follow the datasheet.
# ---------------------------------------------------------------------------
REG_DEVID = const(0x00)  # DEVID: device ID, read-only, 0xE5
REG_THRESH_TAP = const(0x1D)  # THRESH_TAP: tap threshold, 62.5 mg/LSB
REG_OFSX = const(0x1E)  # OFSX: X-axis offset, int8, 15.6 mg/LSB, added to the output
REG_OFSY = const(0x1F)  # OFSY: Y-axis offset
REG_OFSZ = const(0x20)  # OFSZ: Z-axis offset
REG_DUR = const(0x21)  # DUR: tap duration, 625 us/LSB
REG_LATENT = const(0x22)  # Latent: tap latency, 1.25 ms/LSB
REG_WINDOW = const(0x23)  # Window: tap window, 1.25 ms/LSB
REG_THRESH_ACT = const(0x24)  # THRESH_ACT: activity threshold, 62.5 mg/LSB
REG_THRESH_INACT = const(0x25)  # THRESH_INACT: inactivity threshold
REG_TIME_INACT = const(0x26)  # TIME_INACT: inactivity time, 1 s/LSB
REG_ACT_INACT_CTL = const(0x27)  # ACT_INACT_CTL: axis enables for (in)activity
REG_THRESH_FF = const(0x28)  # THRESH_FF: free-fall threshold
REG_TIME_FF = const(0x29)  # TIME_FF: free-fall time, 5 ms/LSB
REG_TAP_AXES = const(0x2A)  # TAP_AXES: axis control for single/double tap
REG_ACT_TAP_STATUS = const(0x2B)  # ACT_TAP_STATUS: source of tap/activity, read-only
REG_BW_RATE = const(0x2C)  # BW_RATE: LOW_POWER bit 4, Rate bits 3:0
REG_POWER_CTL = const(0x2D)  # POWER_CTL: Link 5, AUTO_SLEEP 4, Measure 3, Sleep 2, Wakeup 1:0
REG_INT_ENABLE = const(0x2E)  # INT_ENABLE: interrupt enable (same bit layout as INT_SOURCE)
REG_INT_MAP = const(0x2F)  # INT_MAP: 0 routes a bit to INT1, 1 to INT2
REG_INT_SOURCE = const(0x30)  # INT_SOURCE: interrupt status, read-only
REG_DATA_FORMAT = const(0x31)  # DATA_FORMAT: SELF_TEST 7, SPI 6, INT_INVERT 5, FULL_RES 3, Justify 2, Range 1:0
REG_DATAX0 = const(0x32)  # DATAX0: X-axis data, low byte (two's complement, little-endian)
REG_DATAX1 = const(0x33)  # DATAX1: X-axis data, high byte
REG_DATAY0 = const(0x34)  # DATAY0: Y-axis data, low byte
REG_DATAY1 = const(0x35)  # DATAY1: Y-axis data, high byte
REG_DATAZ0 = const(0x36)  # DATAZ0: Z-axis data, low byte
REG_DATAZ1 = const(0x37)  # DATAZ1: Z-axis data, high byte
REG_FIFO_CTL = const(0x38)  # FIFO_CTL: FIFO_MODE 7:6, Trigger 5, Samples 4:0
REG_FIFO_STATUS = const(0x39)  # FIFO_STATUS: FIFO_TRIG 7, Entries 5:0, read-only

DEVID_VALUE = const(0xE5)  # fixed device ID of the ADXL345
I2C_ADDRESS = const(0x53)  # 7-bit I2C address with ALT ADDRESS low (0x1D when high)

# INT_SOURCE / INT_ENABLE / INT_MAP bits
INT_DATA_READY = const(0x80)  # D7: new data available (cleared by reading the data)
INT_SINGLE_TAP = const(0x40)  # D6
INT_DOUBLE_TAP = const(0x20)  # D5
INT_ACTIVITY = const(0x10)  # D4
INT_INACTIVITY = const(0x08)  # D3
INT_FREE_FALL = const(0x04)  # D2
INT_WATERMARK = const(0x02)  # D1: FIFO entries >= FIFO_CTL samples
INT_OVERRUN = const(0x01)  # D0: new data replaced unread data / FIFO filled

# POWER_CTL bits
POWER_MEASURE = const(0x08)  # Measure: 0 = standby, 1 = measurement mode
POWER_SLEEP = const(0x04)  # Sleep: sample at the wake-up rate
POWER_WAKEUP_MASK = const(0x03)  # Wakeup: 0 -> 8 Hz, 1 -> 4 Hz, 2 -> 2 Hz, 3 -> 1 Hz in sleep

# DATA_FORMAT bits
FORMAT_SELF_TEST = const(0x80)
FORMAT_INT_INVERT = const(0x20)  # interrupts active low
FORMAT_FULL_RES = const(0x08)  # full resolution: 3.9 mg/LSB at every range
FORMAT_JUSTIFY = const(0x04)  # 1 = left-justified (MSB) data, 0 = right-justified, sign-extended
FORMAT_RANGE_MASK = const(0x03)  # 0 -> +/-2 g, 1 -> +/-4 g, 2 -> +/-8 g, 3 -> +/-16 g

# FIFO_CTL FIFO_MODE field (bits 7:6) and other fields
FIFO_BYPASS = const(0)  # FIFO bypassed, data registers hold the newest sample
FIFO_FIFO = const(1)  # collect up to 32 samples, then stop collecting
FIFO_STREAM = const(2)  # keep the newest 32 samples, discarding the oldest
FIFO_TRIGGER = const(3)  # stream until a trigger, then keep `samples` and fill like FIFO mode
FIFO_MODE_SHIFT = const(6)
FIFO_TRIGGER_BIT = const(0x20)  # Trigger: 0 -> trigger event on INT1, 1 -> INT2
FIFO_SAMPLES_MASK = const(0x1F)  # Samples: watermark (stream/FIFO) or pre-trigger count
FIFO_STATUS_TRIG = const(0x80)  # FIFO_TRIG: a trigger event is occurring
FIFO_DEPTH = const(32)  # entries the FIFO holds

LSB_PER_G = const(256)  # typical sensitivity, +/-2 g and every FULL_RES range (3.9 mg/LSB)
OFFSET_G_PER_LSB = 0.015625  # OFSx scale: 15.6 mg/LSB (1/64 g, i.e. 4 LSB of 3.9 mg)

# Registers the host cannot write (writes are ignored, as on the chip).
_READ_ONLY = (REG_DEVID, REG_ACT_TAP_STATUS, REG_INT_SOURCE, REG_DATAX0, REG_DATAX1,
              REG_DATAY0, REG_DATAY1, REG_DATAZ0, REG_DATAZ1, REG_FIFO_STATUS)
_SLEEP_RATES_HZ = (8.0, 4.0, 2.0, 1.0)  # wake-up bits 1:0 -> sampling rate in sleep mode

# A sample due within this fraction of a period of `t` counts as due: protects
# exact steps (t = k/ODR) from floating-point rounding.
_DUE_EPSILON = 1e-6


def output_data_rate_hz(rate_code):
    """Output data rate in Hz for a BW_RATE rate code 0..15: 3200 / 2**(15 - code)."""
    return 3200.0 / (1 << (15 - (rate_code & 0x0F)))


def rate_code_for_hz(rate_hz):
    """BW_RATE rate code for an output data rate in Hz (nearest code; 3200 Hz -> 15)."""
    best = 0
    for code in range(16):
        if abs(output_data_rate_hz(code) - rate_hz) < abs(output_data_rate_hz(best) - rate_hz):
            best = code
    return best


def _encode_axis(g, data_format):
    """Convert one axis in g to the 16-bit register value for the given DATA_FORMAT."""
    rng = data_format & FORMAT_RANGE_MASK
    if data_format & FORMAT_FULL_RES:
        bits = 10 + rng  # 10, 11, 12, 13 bits: 3.9 mg/LSB at every range
        lsb_per_g = LSB_PER_G
    else:
        bits = 10  # 10-bit mode: scale factor doubles with each range step
        lsb_per_g = LSB_PER_G >> rng
    # round half away from zero-ish in a way that is identical on CPython and MicroPython
    counts = int(g * lsb_per_g + 0.5) if g >= 0 else -int(-g * lsb_per_g + 0.5)
    top = (1 << (bits - 1)) - 1
    if counts > top:
        counts = top
    elif counts < -top - 1:
        counts = -top - 1
    if data_format & FORMAT_JUSTIFY:
        counts = counts << (16 - bits)  # MSB at bit 15
    return counts


class ADXL345Model:
    """Simulated ADXL345: registers, FIFO and sample timing driven by a clock."""

    def __init__(self, source, clock=None):
        """Create a chip fed by `source` ((x, y, z) g); `clock` makes it advance itself."""
        self.source = source
        self._by_index = bool(getattr(source, "by_index", False))
        self._clock = clock
        self.samples_produced = 0  # samples the chip has converted (also the next source index)
        self.samples_dropped = 0  # samples lost: overwritten unread, or not stored because FIFO was full
        self.register_reads = 0  # read transactions (any length)
        self.register_writes = 0  # write transactions (any length)
        self._regs = bytearray(64)
        self._fifo = []  # oldest first; each entry is the 6 data bytes DATAX0..DATAZ1
        self._output = bytes(6)  # what the data registers show when the FIFO has nothing
        self._fresh = False  # bypass mode: the output holds a sample not yet read
        self._overrun = False  # latched OVERRUN bit
        self._triggered = False  # trigger mode: a trigger event has happened
        self._t = clock() if clock is not None else 0.0
        self.reset()

    # ------------------------------------------------------------------ state
    def set_source(self, source):
        """Feed later samples from another source ((x, y, z) g by time, or by index)."""
        self.source = source
        self._by_index = bool(getattr(source, "by_index", False))

    def reset(self):
        """Return every register to its power-on value (standby, 100 Hz, bypass)."""
        regs = self._regs
        for i in range(len(regs)):
            regs[i] = 0
        regs[REG_DEVID] = DEVID_VALUE
        regs[REG_BW_RATE] = 0x0A  # 100 Hz
        self._fifo = []
        self._output = bytes(6)
        self._fresh = False
        self._overrun = False
        self._triggered = False
        self._anchor()

    def _anchor(self):
        """Restart sample timing at the current time (after a rate or power change)."""
        self._anchor_t = self._t
        self._anchor_k = 0

    @property
    def now(self):
        """Time in seconds the model has advanced to."""
        return self._t

    @property
    def fifo_mode(self):
        """FIFO_MODE field of FIFO_CTL: 0 bypass, 1 FIFO, 2 stream, 3 trigger."""
        return self._regs[REG_FIFO_CTL] >> FIFO_MODE_SHIFT

    @property
    def fifo_entries(self):
        """Samples waiting in the FIFO (0 in bypass mode)."""
        return len(self._fifo)

    @property
    def output_data_rate(self):
        """Current sampling rate in Hz: 0 in standby, the wake-up rate in sleep mode."""
        power = self._regs[REG_POWER_CTL]
        if not power & POWER_MEASURE:
            return 0.0
        if power & POWER_SLEEP:
            return _SLEEP_RATES_HZ[power & POWER_WAKEUP_MASK]
        return output_data_rate_hz(self._regs[REG_BW_RATE])

    # ------------------------------------------------------------------- time
    def advance_to(self, t):
        """Generate every sample due up to time t (seconds); time never runs backwards."""
        if t <= self._t:
            return
        rate = self.output_data_rate
        if rate > 0:
            due = int((t - self._anchor_t) * rate + _DUE_EPSILON)
            n = due - self._anchor_k
            if n > 0:
                self._produce(n, rate)
        self._t = t

    def _tick(self):
        """Advance to the clock's time, if the model has a clock."""
        if self._clock is not None:
            self.advance_to(self._clock())

    def _produce(self, n, rate):
        """Convert n samples at `rate`, skipping the work for samples certain to be lost."""
        mode = self.fifo_mode
        stream_like = mode == FIFO_STREAM or (mode == FIFO_TRIGGER and not self._triggered)
        skip = 0
        if mode == FIFO_BYPASS and n > 1:
            # each of the first n-1 samples is overwritten unread by the next one
            skip = n - 1
            self.samples_dropped += (1 if self._fresh else 0) + skip - 1
            self._fresh = True
            self._overrun = True
        elif stream_like and n > FIFO_DEPTH:
            # only the newest 32 survive; everything older is pushed out
            skip = n - FIFO_DEPTH
            self.samples_dropped += len(self._fifo) + skip
            self._fifo = []
            self._overrun = True
        elif not stream_like and mode != FIFO_BYPASS:
            room = FIFO_DEPTH - len(self._fifo)
            if n > room:
                # FIFO (or triggered) mode stops collecting when full: the rest are lost
                lost = n - room
                self.samples_dropped += lost
                self._overrun = True
                self._generate(room, rate)
                self._count_skipped(lost)
                return
        if skip:
            self._count_skipped(skip)
        self._generate(n - skip, rate)

    def _count_skipped(self, n):
        """Account for n samples that were converted but never stored."""
        self.samples_produced += n
        self._anchor_k += n

    def _generate(self, n, rate):
        """Convert n samples from the source and store them according to the FIFO mode."""
        for _ in range(n):
            self._anchor_k += 1
            if self._by_index:
                x, y, z = self.source(self.samples_produced)
            else:
                x, y, z = self.source(self._anchor_t + self._anchor_k / rate)
            self.samples_produced += 1
            self._store(self._encode(x, y, z))

    def _encode(self, x, y, z):
        """Six data bytes (DATAX0..DATAZ1) for an acceleration in g, offsets applied."""
        regs = self._regs
        fmt = regs[REG_DATA_FORMAT]
        values = []
        for g, ofs in ((x, regs[REG_OFSX]), (y, regs[REG_OFSY]), (z, regs[REG_OFSZ])):
            if ofs > 127:
                ofs -= 256
            values.append(_encode_axis(g + ofs * OFFSET_G_PER_LSB, fmt))
        return struct.pack("<hhh", values[0], values[1], values[2])

    def _store(self, entry):
        """Put one converted sample where the FIFO mode says (datasheet, FIFO section)."""
        mode = self.fifo_mode
        if mode == FIFO_BYPASS:
            if self._fresh:  # new data replaces unread data
                self.samples_dropped += 1
                self._overrun = True
            self._output = entry
            self._fresh = True
            return
        fifo = self._fifo
        if mode == FIFO_STREAM or (mode == FIFO_TRIGGER and not self._triggered):
            if len(fifo) >= FIFO_DEPTH:
                fifo.pop(0)  # stream: the oldest sample is discarded
                self.samples_dropped += 1
            fifo.append(entry)
        else:  # FIFO mode, or trigger mode after the trigger: stop collecting when full
            if len(fifo) >= FIFO_DEPTH:
                self.samples_dropped += 1
            else:
                fifo.append(entry)
        if len(fifo) >= FIFO_DEPTH:
            self._overrun = True  # "in all other modes, the overrun bit is set when FIFO is filled"

    def trigger(self):
        """Deliver a trigger event (trigger mode): keep the last `samples` entries, then fill."""
        if self.fifo_mode != FIFO_TRIGGER or self._triggered:
            return
        self._tick()
        keep = self._regs[REG_FIFO_CTL] & FIFO_SAMPLES_MASK
        fifo = self._fifo
        if len(fifo) > keep:
            self.samples_dropped += len(fifo) - keep
            self._fifo = fifo[len(fifo) - keep:]
        self._triggered = True

    # --------------------------------------------------------------- status
    def _int_source(self):
        """Current INT_SOURCE value (DATA_READY, WATERMARK, OVERRUN)."""
        mode = self.fifo_mode
        watermark = self._regs[REG_FIFO_CTL] & FIFO_SAMPLES_MASK
        value = 0
        if mode == FIFO_BYPASS:
            if self._fresh:
                value |= INT_DATA_READY
        else:
            if self._fifo:
                value |= INT_DATA_READY
            if len(self._fifo) >= watermark:
                value |= INT_WATERMARK
        if watermark == 0:
            value |= INT_WATERMARK  # samples = 0 sets the watermark bit in every mode
        if self._overrun:
            value |= INT_OVERRUN
        return value

    def _fifo_status(self):
        """Current FIFO_STATUS value (FIFO_TRIG, entries)."""
        value = len(self._fifo) & 0x3F
        if self.fifo_mode == FIFO_TRIGGER and self._triggered:
            value |= FIFO_STATUS_TRIG
        return value

    def interrupt_level(self, pin):
        """Logic level of INT1 (pin=1) or INT2 (pin=2), honouring INT_MAP and INT_INVERT."""
        regs = self._regs
        self._tick()
        active = self._int_source() & regs[REG_INT_ENABLE]
        mapped = regs[REG_INT_MAP] if pin == 2 else (~regs[REG_INT_MAP]) & 0xFF
        asserted = (active & mapped) != 0
        if regs[REG_DATA_FORMAT] & FORMAT_INT_INVERT:
            return not asserted
        return asserted

    # ------------------------------------------------------------- register bus
    def read_register(self, reg, n):
        """Read n bytes starting at register reg, auto-incrementing; returns bytes."""
        buf = bytearray(n)
        self.read_into(reg, buf)
        return bytes(buf)

    def read_into(self, reg, buf):
        """Read len(buf) bytes starting at reg into buf (a multi-byte read auto-increments).

        A read that touches any of DATAX0..DATAZ1 pops exactly one FIFO entry when it
        ends, however many data bytes it covered (datasheet: "each FIFO level is cleared
        after any (single- or multiple-byte) read from FIFO"), so a 6-byte burst gives one
        coherent x, y, z sample and split reads of one sample do not work.
        """
        self._tick()
        self.register_reads += 1
        regs = self._regs
        if self._fifo and self.fifo_mode != FIFO_BYPASS:
            head = self._fifo[0]
        else:
            head = self._output
        int_source = self._int_source()  # status as it was when the transaction began
        fifo_status = self._fifo_status()
        touched_data = False
        for i in range(len(buf)):
            addr = (reg + i) & 0x3F
            if REG_DATAX0 <= addr <= REG_DATAZ1:
                buf[i] = head[addr - REG_DATAX0]
                touched_data = True
            elif addr == REG_INT_SOURCE:
                buf[i] = int_source
            elif addr == REG_FIFO_STATUS:
                buf[i] = fifo_status
            elif addr > REG_FIFO_STATUS:
                buf[i] = 0  # reserved
            else:
                buf[i] = regs[addr]
        if touched_data:
            self._pop()

    def _pop(self):
        """Consume the sample in the data registers (DATA_READY/OVERRUN follow)."""
        if self.fifo_mode == FIFO_BYPASS:
            self._fresh = False
        elif self._fifo:
            self._output = self._fifo.pop(0)
        # "the overrun bit is automatically cleared when the contents of FIFO are read"
        self._overrun = False

    def write_register(self, reg, data):
        """Write the bytes of data starting at register reg, auto-incrementing."""
        self._tick()
        self.register_writes += 1
        for i in range(len(data)):
            self._write_one((reg + i) & 0x3F, data[i] & 0xFF)

    def _write_one(self, addr, value):
        """Apply one register write with its side effects."""
        if addr in _READ_ONLY or addr > REG_FIFO_STATUS or (0x01 <= addr <= 0x1C):
            return  # read-only or reserved: ignored
        regs = self._regs
        old = regs[addr]
        regs[addr] = value
        if addr == REG_BW_RATE:
            if (old ^ value) & 0x0F:
                self._anchor()  # new rate: first sample one new period from now
        elif addr == REG_POWER_CTL:
            if (old ^ value) & (POWER_MEASURE | POWER_SLEEP | POWER_WAKEUP_MASK):
                self._anchor()
        elif addr == REG_FIFO_CTL:
            old_mode = old >> FIFO_MODE_SHIFT
            new_mode = value >> FIFO_MODE_SHIFT
            if new_mode != old_mode:
                self._triggered = False
                if new_mode == FIFO_BYPASS:
                    self._fifo = []  # entering bypass empties the FIFO
                    self._overrun = False
                    self._fresh = False
