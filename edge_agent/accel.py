"""The edge agent's ADXL345 reader: the Adafruit driver plus FIFO stream mode and burst reads.

The unmodified Adafruit CircuitPython driver (``adafruit_adxl34x.ADXL345``) sets the
output data rate and range. What it lacks is added here through the driver's own
``I2CDevice`` (``driver._i2c``): FIFO stream mode with a watermark, FULL_RES data, and
reading the FIFO as one 6-byte burst of DATAX0..DATAZ1 per entry.

One setting picks the hardware, gpiozero-style::

    accel = Accelerometer.create(hardware="real")                  # board.I2C() via Blinka
    accel = Accelerometer.create(hardware="sim", source=synthetic())  # FakeI2C + ADXL345Model

and the same code runs on both. The simulated chip advances on the wall clock
(``time.monotonic``) unless another ``clock`` is given, which tests use to step time.

Polling. In stream mode the chip keeps the newest 32 samples; read them before the FIFO
fills: at ``rate_hz`` that is every < 32 / rate_hz seconds (40 ms at 800 Hz). Poll at about
``watermark / rate_hz``. Each poll costs two 1-byte register reads (INT_SOURCE, FIFO_STATUS)
plus one 1+6-byte transaction per entry: about 84 SCL cycles, 210 us per sample at 400 kHz,
so on a 400 kHz bus 800 Hz takes ~17 % of the bus and 3200 Hz ~67 % before any OS overhead.
The datasheet recommends 1600/3200 Hz only with SPI at >= 2 MHz and 800 Hz with I2C at 400 kHz.

The agent talks to the sensor only through ``AccelerometerInterface`` (below): raw
counts from the FIFO, their scale to g beside them (``samples_g``), rate, range and
the power and FIFO controls. ``Accelerometer`` implements it on both hardware
settings; a stand-in (a test, a benchmark) subclasses it too.
"""

import os
import time

import numpy as np

# Register map used here (datasheet Rev. G, Table 19); the driver keeps its own private copy.
_REG_INT_SOURCE = 0x30  # INT_SOURCE: DATA_READY 7, WATERMARK 1, OVERRUN 0
_REG_DATA_FORMAT = 0x31  # DATA_FORMAT: FULL_RES 3, Justify 2, Range 1:0
_REG_POWER_CTL = 0x2D  # POWER_CTL: Measure 3, Sleep 2
_REG_DATAX0 = 0x32  # DATAX0: first of the six data registers, read as one burst
_REG_FIFO_CTL = 0x38  # FIFO_CTL: FIFO_MODE 7:6, Trigger 5, Samples 4:0
_REG_FIFO_STATUS = 0x39  # FIFO_STATUS: FIFO_TRIG 7, Entries 5:0

_INT_OVERRUN = 0x01  # INT_SOURCE D0: FIFO filled / data lost
_POWER_MEASURE = 0x08  # POWER_CTL D3: measurement mode (0 = standby, 0.1 uA)
_FULL_RES = 0x08  # DATA_FORMAT D3: 3.9 mg/LSB at every range
_FIFO_MODE_BYPASS = 0x00  # FIFO_CTL 7:6 = 00: bypass (also empties the FIFO)
_FIFO_MODE_STREAM = 0x80  # FIFO_CTL 7:6 = 10: stream, keep the newest 32
_FIFO_DEPTH = 32  # entries the ADXL345 FIFO holds
_ENTRY_BYTES = 6  # DATAX0..DATAZ1
_ADDRESS = 0x53  # ALT ADDRESS pin low

SCALE_G_FULL_RES = 1.0 / 256  # g per count in FULL_RES: 3.9 mg/LSB (256 LSB/g typ.)

# Output data rate (Hz) -> BW_RATE rate code; the driver's DataRate constants are the same codes.
RATES_HZ = {3200: 0b1111, 1600: 0b1110, 800: 0b1101, 400: 0b1100, 200: 0b1011, 100: 0b1010,
            50: 0b1001, 25: 0b1000, 12.5: 0b0111, 6.25: 0b0110, 3.13: 0b0101, 1.56: 0b0100,
            0.78: 0b0011, 0.39: 0b0010, 0.2: 0b0001, 0.1: 0b0000}
RANGES_G = (2, 4, 8, 16)  # full-scale range in +/- g -> Range code 0..3


def rate_code(rate_hz):
    """BW_RATE code for an output data rate in Hz (one of RATES_HZ, within 1 %)."""
    for hz, code in RATES_HZ.items():
        if abs(hz - rate_hz) <= 0.01 * hz:
            return code
    raise ValueError("ADXL345 output data rate must be one of %s Hz, not %r"
                     % (sorted(RATES_HZ), rate_hz))


def range_code(range_g):
    """DATA_FORMAT range code for a full-scale range of +/-2, 4, 8 or 16 g."""
    if range_g not in RANGES_G:
        raise ValueError("ADXL345 range must be one of %s g, not %r" % (RANGES_G, range_g))
    return RANGES_G.index(range_g)


class AccelerometerInterface:
    """What the agent needs of a 3-axis accelerometer with a FIFO: counts, their scale to g, controls.

    Like the Adafruit driver (``acceleration`` in SI units, ``raw_x`` beside it), a
    reading comes as raw counts with the scale beside them: ``read_fifo()`` gives
    int16 counts, ``samples_g(counts)`` the same samples in g. Every method and
    property raises NotImplementedError here; an implementation overrides them all.
    The two counters are plain attributes every implementation keeps (set here):

    * ``overruns``   FIFO reads that found samples lost (full FIFO or OVERRUN set);
    * ``i2c_errors`` bus errors caught (the read is cut short and resumed next time).
    """

    def __init__(self):
        """Start the counters at zero (an implementation calls this from its own __init__)."""
        self.overruns = 0
        self.i2c_errors = 0

    @property
    def rate_hz(self):
        """Output data rate in Hz, as set by open() or set_rate()."""
        raise NotImplementedError

    @property
    def range_g(self):
        """Full-scale range in +/- g, as set by open() or set_range()."""
        raise NotImplementedError

    @property
    def scale_g(self):
        """g per count of read_fifo()'s samples (at the current range)."""
        raise NotImplementedError

    def samples_g(self, counts):
        """Counts (n, 3) from read_fifo() as float64 samples in g."""
        return np.asarray(counts, dtype=np.float64) * self.scale_g

    def open(self, rate_hz, range_g, watermark):
        """Configure rate (Hz), range (+/- g) and FIFO watermark (samples), start measuring; returns self."""
        raise NotImplementedError

    def read_fifo(self):
        """Drain the FIFO: (int16 counts, shape (n, 3), x/y/z; overrun flag: samples were lost before them).

        The counts may be a view of a buffer the next call reuses: copy them to keep them.
        """
        raise NotImplementedError

    def flush(self):
        """Discard what the FIFO holds while measuring goes on (not counted as an overrun)."""
        raise NotImplementedError

    def set_rate(self, rate_hz):
        """Change the output data rate (Hz); ValueError for a rate the chip lacks, OSError from the bus."""
        raise NotImplementedError

    def set_range(self, range_g):
        """Change the full-scale range (+/- g); ValueError for a range the chip lacks, OSError from the bus."""
        raise NotImplementedError

    def sleep(self):
        """Stop measuring (standby); OSError from the bus."""
        raise NotImplementedError

    def wake(self):
        """Measure again, with an empty FIFO; OSError from the bus."""
        raise NotImplementedError

    def close(self):
        """Stop measuring and release the sensor."""
        raise NotImplementedError


class Accelerometer(AccelerometerInterface):
    """ADXL345 in FIFO stream mode, read in bursts; counts overruns and I2C errors."""

    def __init__(self, i2c, address=_ADDRESS, chip=None):
        """Wrap the Adafruit driver on bus i2c; chip is the simulated ADXL345, if any."""
        import adafruit_adxl34x

        super().__init__()
        self._adafruit = adafruit_adxl34x
        self.bus = i2c
        self.chip = chip  # ADXL345Model when simulated, else None
        self.driver = adafruit_adxl34x.ADXL345(i2c, address)  # probes, sets Measure
        self._device = self.driver._i2c  # the driver's adafruit_bus_device I2CDevice
        self._reg = bytearray(2)  # register pointer (+ value for writes)
        self._byte = bytearray(1)
        # One buffer for a whole FIFO: entry i is read into bytes 6i..6i+5; the samples
        # array is a little-endian int16 view of it, so no copy and no allocation per poll.
        self._raw = bytearray(_FIFO_DEPTH * _ENTRY_BYTES)
        self._samples = np.frombuffer(self._raw, dtype="<i2").reshape(_FIFO_DEPTH, 3)
        self._rate_hz = 0.0
        self._range_g = 2
        self._watermark = 16
        self._open = False
        # overruns: polls that found the FIFO full or OVERRUN set; i2c_errors: OSErrors caught
        # (the poll is cut short and resumed next time): both kept by AccelerometerInterface.
        self.samples_read = 0  # samples returned by read_fifo
        self.samples_discarded = 0  # samples flushed on purpose by set_rate/wake
        self.polls = 0  # read_fifo calls
        self._recording_path = None  # simulated chip fed by a recording: resampled per rate

    @classmethod
    def create(cls, hardware="sim", source=None, clock=None, address=_ADDRESS, i2c=None):
        """Reader on real hardware (board.I2C()) or a simulated chip (FakeI2C + ADXL345Model).

        hardware: "real" or "sim". For "sim", source is a callable giving (x, y, z) g, or
        a name: "synthetic" (default, pump bearing), "counter", "rest" (1 g on z), or the
        path of a CWRU CSV recording, which is resampled to the rate set by open/set_rate.
        clock is the time the simulated chip runs on (default time.monotonic).
        i2c overrides the bus for "real".
        """
        if hardware == "real":
            if i2c is None:
                try:
                    import board  # Blinka; imported only for real hardware
                except NotImplementedError as e:   # older Blinka on a machine it does not know
                    raise RuntimeError("Blinka does not support this machine (%s): the real ADXL345 needs a "
                                       "Raspberry Pi with I2C enabled; elsewhere use hardware = \"sim\"" % e) from None
                if not hasattr(board, "I2C"):
                    # Blinka's generic boards (a PC, an unknown SBC) have pin names but no I2C bus.
                    raise RuntimeError("Blinka knows no I2C bus on this machine (board %s): the real ADXL345 "
                                       "needs a Raspberry Pi with I2C enabled (raspi-config, Interface Options, "
                                       "I2C); elsewhere use hardware = \"sim\"" % getattr(board, "board_id", "unknown"))
                i2c = board.I2C()
            return cls(i2c, address)
        if hardware == "sim":
            from fieldwatch.sim.adxl345 import ADXL345Model
            from fieldwatch.sim.i2c import FakeI2C
            from fieldwatch.sim import signals

            recording_path = None
            if source is None or source == "synthetic":
                source = signals.synthetic()
            elif source == "counter":
                source = signals.counter()
            elif source == "rest":
                source = signals.constant(0.0, 0.0, 1.0)
            elif isinstance(source, (str, os.PathLike)):
                if not os.path.isfile(source):
                    raise ValueError("simulated source must be synthetic, counter, rest or "
                                     "the path of a CSV recording, not %r" % (source,))
                recording_path = source
                source = signals.recording(recording_path, 100.0)  # re-made at open()
            chip = ADXL345Model(source, clock=clock if clock is not None else time.monotonic)
            bus = FakeI2C()
            bus.attach(address, chip)
            accel = cls(bus, address, chip=chip)
            accel._recording_path = recording_path
            return accel
        raise ValueError("hardware must be 'sim' or 'real', not %r" % (hardware,))

    # ----------------------------------------------------------- settings
    @property
    def rate_hz(self):
        """Output data rate in Hz (3200 / 2**(15 - code))."""
        return self._rate_hz

    @property
    def range_g(self):
        """Full-scale range in +/- g."""
        return self._range_g

    @property
    def watermark(self):
        """FIFO watermark in samples (1..31)."""
        return self._watermark

    @property
    def scale_g(self):
        """g per count: 1/256 (3.9 mg/LSB) at every range, since FULL_RES is always set."""
        return SCALE_G_FULL_RES

    @property
    def poll_interval_s(self):
        """Suggested poll period: the time the FIFO takes to reach the watermark."""
        return self._watermark / self._rate_hz

    def open(self, rate_hz=800, range_g=16, watermark=16):
        """Configure rate, range, FULL_RES and FIFO stream mode with a watermark; start measuring."""
        if not 1 <= watermark <= 31:
            raise ValueError("watermark must be 1..31 samples, not %r" % (watermark,))
        code = rate_code(rate_hz)
        rcode = range_code(range_g)
        self._write(_REG_POWER_CTL, 0)  # standby while configuring (datasheet advice)
        self.driver.data_rate = code
        self.driver.range = rcode  # the driver also sets FULL_RES
        self._write(_REG_DATA_FORMAT, _FULL_RES | rcode)  # right-justified, INT active high
        self._watermark = watermark
        self._rate_hz = 3200.0 / (1 << (15 - code))
        self._range_g = range_g
        self._restart_fifo()
        self._open = True
        return self

    def set_rate(self, rate_hz):
        """Change the output data rate; samples still queued at the old rate are discarded."""
        code = rate_code(rate_hz)
        self._write(_REG_POWER_CTL, 0)
        self.driver.data_rate = code
        self._rate_hz = 3200.0 / (1 << (15 - code))
        self._restart_fifo()

    def set_range(self, range_g):
        """Change the full-scale range; counts keep 3.9 mg/LSB (FULL_RES), so queued samples stay valid."""
        rcode = range_code(range_g)
        self.driver.range = rcode
        self._range_g = range_g

    def sleep(self):
        """Stop measuring: standby (Measure = 0, about 0.1 uA); the FIFO is kept."""
        self._write(_REG_POWER_CTL, 0)

    def wake(self):
        """Resume measuring with an empty FIFO (samples left from before sleep are discarded)."""
        self._write(_REG_POWER_CTL, 0)
        self._restart_fifo()

    def close(self):
        """Put the chip in standby and stop reading."""
        try:
            self.sleep()
        finally:
            self._open = False

    def flush(self):
        """Empty the FIFO while measuring goes on: start reading afresh (the reader calls it first).

        What was queued is discarded (counted in samples_discarded, not as an overrun):
        between open() and the first read the FIFO may have filled (the agent builds its
        uplink, GPS and indicator in between: 20 ms is a full FIFO at 1600 Hz).
        """
        if not self._open:
            raise RuntimeError("Accelerometer.flush before open()")
        self._empty_fifo()

    def _empty_fifo(self):
        """Discard the FIFO's entries (bypass), then stream mode with the watermark again."""
        try:
            entries = self._read_byte(_REG_FIFO_STATUS) & 0x3F
        except OSError:
            entries = 0
        self.samples_discarded += entries
        self._write(_REG_FIFO_CTL, _FIFO_MODE_BYPASS)
        self._write(_REG_FIFO_CTL, _FIFO_MODE_STREAM | self._watermark)

    def _restart_fifo(self):
        """Empty the FIFO (bypass), select stream mode with the watermark, then measure."""
        if self.chip is not None and self._recording_path is not None:
            from fieldwatch.sim import signals

            # the simulated chip's recording follows the new rate, anti-aliased
            self.chip.set_source(signals.recording(self._recording_path, self._rate_hz))
        self._empty_fifo()
        self._write(_REG_POWER_CTL, _POWER_MEASURE)

    # ---------------------------------------------------------------- bus
    def _write(self, register, value):
        """Write one register through the driver's I2CDevice."""
        self._reg[0] = register
        self._reg[1] = value & 0xFF
        with self._device as device:
            device.write(self._reg, start=0, end=2)

    def _read_byte(self, register):
        """Read one register through the driver's I2CDevice (write pointer, repeated start, read)."""
        self._reg[0] = register
        with self._device as device:
            device.write_then_readinto(self._reg, self._byte, out_end=1)
        return self._byte[0]

    def read_register(self, register):
        """One register's value (for diagnostics, e.g. DEVID 0xE5)."""
        return self._read_byte(register)

    # ------------------------------------------------------------ reading
    def read_fifo(self):
        """Drain the FIFO: (int16 counts, shape (n, 3), x/y/z; overrun flag).

        The array is a view into a buffer reused by the next call: copy it to keep it.
        Overrun means the FIFO was full (or INT_SOURCE OVERRUN was set) when polled, or full
        again at the end of the burst, so samples may have been lost since the last poll or
        during this one. An I2C error ends the poll early:
        the entries already read are returned, the rest stay in the FIFO for next time.
        """
        if not self._open:
            raise RuntimeError("Accelerometer.read_fifo before open()")
        self.polls += 1
        count = 0
        overrun = False
        try:
            int_source = self._read_byte(_REG_INT_SOURCE)
            entries = self._read_byte(_REG_FIFO_STATUS) & 0x3F
            overrun = bool(int_source & _INT_OVERRUN) or entries >= _FIFO_DEPTH
            if overrun:
                self.overruns += 1
            if entries > _FIFO_DEPTH:
                entries = _FIFO_DEPTH
            self._reg[0] = _REG_DATAX0
            with self._device as device:
                # one 6-byte burst per entry: each read of the data registers pops one entry
                # (the bus gap between transactions exceeds the 5 us the datasheet asks for)
                while count < entries:
                    start = count * _ENTRY_BYTES
                    device.write_then_readinto(self._reg, self._raw, out_end=1,
                                               in_start=start, in_end=start + _ENTRY_BYTES)
                    count += 1
            if count:
                # A bus slower than the data rate lets the FIFO fill again while it is being
                # drained; an entry overwritten then leaves a hole inside this batch and its
                # OVERRUN bit is cleared by the pops that follow. Full at the end of the burst
                # is the trace it leaves: flag this batch, not only the next one.
                if (self._read_byte(_REG_FIFO_STATUS) & 0x3F) >= _FIFO_DEPTH and not overrun:
                    overrun = True
                    self.overruns += 1
        except OSError:
            self.i2c_errors += 1
        self.samples_read += count
        return self._samples[:count], overrun
