"""The simulated ADXL345 (fieldwatch/sim/adxl345.py) and fake bus (fieldwatch/sim/i2c.py): register semantics
from the datasheet (Rev. G), the real Adafruit driver running on them, and the same model
under the MicroPython Unix port."""

import struct
import time

import adafruit_adxl34x
import pytest

from fieldwatch.sim import signals
from fieldwatch.sim.adxl345 import (ADXL345Model, FIFO_BYPASS, FIFO_FIFO, FIFO_STREAM, FIFO_TRIGGER,
                         INT_DATA_READY, INT_OVERRUN, INT_WATERMARK, REG_BW_RATE,
                         REG_DATA_FORMAT, REG_DATAX0, REG_DEVID, REG_FIFO_CTL,
                         REG_FIFO_STATUS, REG_INT_ENABLE, REG_INT_MAP, REG_INT_SOURCE,
                         REG_OFSX, REG_POWER_CTL, output_data_rate_hz, rate_code_for_hz)
from fieldwatch.sim.i2c import EIO, FakeI2C

STANDARD_GRAVITY = 9.80665
DRIVER_G_PER_LSB = 0.004  # what the Adafruit driver multiplies by (the chip is 3.9 mg/LSB)


def _byte(chip, reg):
    return chip.read_register(reg, 1)[0]


def _measuring_chip(source, rate_code=0x0D, fifo_mode=FIFO_STREAM, samples=16, data_format=0x0B):
    """A chip at t=0: rate code (800 Hz default), FIFO mode, FULL_RES +/-16 g, measuring."""
    chip = ADXL345Model(source)
    chip.write_register(REG_BW_RATE, bytes([rate_code]))
    chip.write_register(REG_DATA_FORMAT, bytes([data_format]))
    chip.write_register(REG_FIFO_CTL, bytes([(fifo_mode << 6) | samples]))
    chip.write_register(REG_POWER_CTL, bytes([0x08]))
    return chip


def _pop_index(chip, source):
    x, y, _ = struct.unpack("<hhh", chip.read_register(REG_DATAX0, 6))
    return source.index_of(x, y)


def test_registers_devid_and_power_on_values():
    chip = ADXL345Model(signals.constant())
    assert _byte(chip, REG_DEVID) == 0xE5
    assert _byte(chip, REG_BW_RATE) == 0x0A  # 100 Hz
    assert _byte(chip, REG_POWER_CTL) == 0x00  # standby
    assert _byte(chip, REG_INT_SOURCE) == 0x02  # samples = 0 sets WATERMARK
    assert _byte(chip, REG_FIFO_STATUS) == 0
    chip.write_register(REG_DEVID, b"\x12")  # read-only: ignored
    chip.write_register(REG_INT_SOURCE, b"\xff")
    assert _byte(chip, REG_DEVID) == 0xE5 and _byte(chip, REG_INT_SOURCE) == 0x02
    chip.write_register(REG_OFSX, b"\x01\x02\x03")  # plain storage, auto-increment
    assert chip.read_register(REG_OFSX, 3) == b"\x01\x02\x03"


def test_registers_standby_produces_nothing():
    chip = ADXL345Model(signals.constant())
    chip.advance_to(10.0)
    assert chip.samples_produced == 0 and chip.output_data_rate == 0.0


@pytest.mark.parametrize("code", range(16))
def test_registers_rate_code_sets_output_data_rate(code):
    rate = 3200.0 / 2 ** (15 - code)
    assert output_data_rate_hz(code) == rate and rate_code_for_hz(rate) == code
    chip = _measuring_chip(signals.constant(), rate_code=code, fifo_mode=FIFO_BYPASS)
    seconds = max(1.0, 20.0 / rate)  # at least 20 samples
    chip.advance_to(seconds)
    assert chip.samples_produced == int(round(seconds * rate))
    assert chip.output_data_rate == rate


def test_registers_rate_change_restarts_sample_timing():
    chip = _measuring_chip(signals.constant(), rate_code=0x0A)  # 100 Hz
    chip.advance_to(0.105)  # 10 samples, 5 ms into the next period
    chip.write_register(REG_BW_RATE, bytes([0x0D]))  # 800 Hz from t = 0.105
    chip.advance_to(0.105 + 0.1)
    assert chip.samples_produced == 10 + 80


def test_registers_sleep_samples_at_wakeup_rate():
    chip = _measuring_chip(signals.constant(), fifo_mode=FIFO_BYPASS)
    chip.write_register(REG_POWER_CTL, bytes([0x08 | 0x04 | 0x01]))  # sleep, wake-up 4 Hz
    chip.advance_to(2.0)
    assert chip.samples_produced == 8
    chip.write_register(REG_POWER_CTL, bytes([0x00]))  # standby
    chip.advance_to(10.0)
    assert chip.samples_produced == 8


def test_fifo_stream_keeps_newest_32_and_sets_overrun():
    source = signals.counter()
    chip = _measuring_chip(source)
    chip.advance_to(40 / 800)  # 40 samples into a 32-entry FIFO
    assert chip.samples_produced == 40 and chip.samples_dropped == 8
    assert _byte(chip, REG_FIFO_STATUS) == 32
    status = _byte(chip, REG_INT_SOURCE)
    assert status & INT_OVERRUN and status & INT_WATERMARK and status & INT_DATA_READY
    # reading INT_SOURCE does not clear OVERRUN; reading the data does
    assert _byte(chip, REG_INT_SOURCE) & INT_OVERRUN
    assert [_pop_index(chip, source) for _ in range(32)] == list(range(8, 40))
    assert _byte(chip, REG_INT_SOURCE) == 0  # empty: no DATA_READY, below watermark, no overrun
    assert _byte(chip, REG_FIFO_STATUS) == 0


def test_fifo_mode_stops_collecting_when_full():
    source = signals.counter()
    chip = _measuring_chip(source, fifo_mode=FIFO_FIFO)
    chip.advance_to(40 / 800)
    assert chip.fifo_entries == 32 and chip.samples_dropped == 8
    assert _byte(chip, REG_INT_SOURCE) & INT_OVERRUN
    assert _pop_index(chip, source) == 0  # the oldest are kept, the newest were lost
    chip.advance_to(42 / 800)  # room for one more: sample 40 is stored, 41 is lost
    assert chip.fifo_entries == 32 and chip.samples_dropped == 9
    assert [_pop_index(chip, source) for _ in range(32)] == list(range(1, 32)) + [40]


def test_fifo_bypass_keeps_only_the_latest_sample():
    source = signals.counter()
    chip = _measuring_chip(source, fifo_mode=FIFO_BYPASS)
    chip.advance_to(5 / 800)
    assert _byte(chip, REG_FIFO_STATUS) == 0
    status = _byte(chip, REG_INT_SOURCE)
    assert status & INT_DATA_READY and status & INT_OVERRUN  # 4 samples replaced unread
    assert chip.samples_dropped == 4
    assert _pop_index(chip, source) == 4
    assert not _byte(chip, REG_INT_SOURCE) & (INT_DATA_READY | INT_OVERRUN)
    assert _pop_index(chip, source) == 4  # stale until the next conversion


def test_fifo_switching_to_bypass_empties_it():
    chip = _measuring_chip(signals.counter())
    chip.advance_to(10 / 800)
    assert chip.fifo_entries == 10
    chip.write_register(REG_FIFO_CTL, bytes([FIFO_BYPASS << 6]))
    assert chip.fifo_entries == 0 and _byte(chip, REG_FIFO_STATUS) == 0


def test_fifo_watermark_bit_follows_entries():
    chip = _measuring_chip(signals.counter(), samples=10)
    chip.advance_to(9 / 800)
    assert not _byte(chip, REG_INT_SOURCE) & INT_WATERMARK
    chip.advance_to(10 / 800)
    assert _byte(chip, REG_INT_SOURCE) & INT_WATERMARK
    chip.read_register(REG_DATAX0, 6)
    assert not _byte(chip, REG_INT_SOURCE) & INT_WATERMARK


def test_fifo_trigger_mode_keeps_pretrigger_samples_then_fills():
    source = signals.counter()
    chip = _measuring_chip(source, fifo_mode=FIFO_TRIGGER, samples=4)
    chip.advance_to(20 / 800)
    assert chip.fifo_entries == 20 and not _byte(chip, REG_FIFO_STATUS) & 0x80
    chip.trigger()
    assert chip.fifo_entries == 4 and _byte(chip, REG_FIFO_STATUS) & 0x80
    chip.advance_to(60 / 800)  # fills to 32, then stops
    assert [_pop_index(chip, source) for _ in range(32)] == list(range(16, 48))


def test_burst_read_pops_exactly_one_entry():
    source = signals.counter()
    chip = _measuring_chip(source)
    chip.advance_to(8 / 800)
    assert _pop_index(chip, source) == 0 and chip.fifo_entries == 7
    # a 2-byte read of DATAX0 also pops a whole entry (datasheet: any read clears a level)
    chip.read_register(REG_DATAX0, 2)
    assert chip.fifo_entries == 6
    # a longer burst running into FIFO_CTL/FIFO_STATUS still pops only one, and shows
    # FIFO_STATUS as it was when the read began
    data = chip.read_register(REG_DATAX0, 8)
    assert data[7] == 6 and chip.fifo_entries == 5
    x, y, _ = struct.unpack_from("<hhh", data)
    assert source.index_of(x, y) == 2
    # non-data registers do not pop
    chip.read_register(REG_FIFO_STATUS, 1)
    chip.read_register(REG_BW_RATE, 6)
    assert chip.fifo_entries == 5 and _pop_index(chip, source) == 3


@pytest.mark.parametrize("rng", [0, 1, 2, 3])
def test_data_format_scaling_full_res_and_10_bit(rng):
    g = (0.5, -1.0, 1.75)
    full = _measuring_chip(signals.constant(*g), fifo_mode=FIFO_BYPASS, data_format=0x08 | rng)
    ten = _measuring_chip(signals.constant(*g), fifo_mode=FIFO_BYPASS, data_format=rng)
    full.advance_to(0.01)
    ten.advance_to(0.01)
    assert struct.unpack("<hhh", full.read_register(REG_DATAX0, 6)) == (128, -256, 448)
    assert struct.unpack("<hhh", ten.read_register(REG_DATAX0, 6)) == tuple(
        int(v * (256 >> rng)) for v in g)


@pytest.mark.parametrize("full_res, rng, expected", [
    (True, 0, 511), (True, 1, 1023), (True, 2, 2047), (True, 3, 4095),  # 10..13 bits
    (False, 0, 511), (False, 1, 511), (False, 3, 511)])
def test_data_format_clips_at_the_range_limit(full_res, rng, expected):
    chip = _measuring_chip(signals.constant(40.0, -40.0, 0.0), fifo_mode=FIFO_BYPASS,
                           data_format=(0x08 if full_res else 0) | rng)
    chip.advance_to(0.01)
    x, y, _ = struct.unpack("<hhh", chip.read_register(REG_DATAX0, 6))
    assert (x, y) == (expected, -expected - 1)


def test_data_format_left_justified():
    chip = _measuring_chip(signals.constant(1.0, -0.5, 0.0), fifo_mode=FIFO_BYPASS,
                           data_format=0x04)  # 10-bit +/-2 g, justify: MSB at bit 15
    chip.advance_to(0.01)
    assert struct.unpack("<hhh", chip.read_register(REG_DATAX0, 6)) == (256 << 6, -128 << 6, 0)


def test_offset_registers_add_15_6_mg_per_lsb():
    chip = _measuring_chip(signals.constant(0.0, 0.0, 1.0), fifo_mode=FIFO_BYPASS)
    chip.write_register(REG_OFSX, bytes([2, 0xFF, 0]))  # +2, -1 LSB of 15.6 mg
    chip.advance_to(0.01)
    assert struct.unpack("<hhh", chip.read_register(REG_DATAX0, 6)) == (8, -4, 256)


def test_interrupt_pins_follow_enable_map_and_invert():
    chip = _measuring_chip(signals.constant(), samples=4)
    chip.write_register(REG_INT_ENABLE, bytes([INT_WATERMARK]))
    chip.write_register(REG_INT_MAP, bytes([INT_WATERMARK]))  # watermark -> INT2
    chip.advance_to(3 / 800)
    assert not chip.interrupt_level(2)
    chip.advance_to(4 / 800)
    assert chip.interrupt_level(2) and not chip.interrupt_level(1)
    chip.write_register(REG_DATA_FORMAT, bytes([0x0B | 0x20]))  # INT_INVERT: active low
    assert not chip.interrupt_level(2) and chip.interrupt_level(1)


def test_clock_callable_advances_the_chip_on_bus_access():
    now = [100.0]
    chip = ADXL345Model(signals.counter(), clock=lambda: now[0])
    chip.write_register(REG_BW_RATE, bytes([0x0C]))  # 400 Hz
    chip.write_register(REG_FIFO_CTL, bytes([FIFO_STREAM << 6]))
    chip.write_register(REG_POWER_CTL, bytes([0x08]))
    now[0] += 0.05
    assert _byte(chip, REG_FIFO_STATUS) == 20


def test_large_time_jump_is_fast_and_counted():
    chip = _measuring_chip(signals.counter(), rate_code=0x0F)  # 3200 Hz, stream
    started = time.perf_counter()
    chip.advance_to(3600.0)
    assert time.perf_counter() - started < 0.5
    assert chip.samples_produced == 3200 * 3600
    assert chip.samples_dropped == 3200 * 3600 - 32 and chip.fifo_entries == 32


# ---------------------------------------------------------------- fake bus


def test_fake_bus_pointer_counters_and_machine_api():
    chip = _measuring_chip(signals.counter())
    bus = FakeI2C()
    bus.attach(0x53, chip)
    assert bus.scan() == [0x53]
    buf = bytearray(1)
    bus.writeto(0x53, b"\x00")
    bus.readfrom_into(0x53, buf)
    assert buf[0] == 0xE5
    assert bus.readfrom_mem(0x53, REG_BW_RATE, 2) == bytes([0x0D, 0x08])
    bus.writeto_mem(0x53, REG_OFSX, b"\x05")
    out = bytearray(4)
    bus.writeto_then_readfrom(0x53, bytes([REG_OFSX]), out, in_start=1, in_end=2)
    assert out == bytearray([0, 5, 0, 0])
    assert bus.transactions == 5
    assert bus.bytes_read == 1 + 2 + 1
    # writeto_then_readfrom of 1 + 6 bytes: 2 starts, 9 bytes x 9 bits, stop = 84 SCL cycles
    before = bus.bits
    bus.writeto_then_readfrom(0x53, bytes([REG_DATAX0]), bytearray(6))
    assert bus.bits - before == 84
    assert bus.bus_seconds(400000) == pytest.approx(bus.bits / 400000)


def test_fake_bus_error_injection_and_absent_device():
    chip = ADXL345Model(signals.constant())
    bus = FakeI2C()
    bus.attach(0x53, chip)
    with pytest.raises(OSError) as err:
        bus.readfrom_mem(0x1D, 0, 1)  # nothing there: NACK
    assert err.value.errno == 121
    bus.fail_next(count=2, after=1, errno=EIO)
    assert bus.readfrom_mem(0x53, REG_DEVID, 1) == b"\xe5"
    for _ in range(2):
        with pytest.raises(OSError) as err:
            bus.readfrom_mem(0x53, REG_DEVID, 1)
        assert err.value.errno == EIO
    assert bus.readfrom_mem(0x53, REG_DEVID, 1) == b"\xe5"
    assert bus.errors_injected == 2
    bus.error_rate = 0.25
    failures = 0
    for _ in range(2000):
        try:
            bus.readfrom_mem(0x53, REG_DEVID, 1)
        except OSError:
            failures += 1
    assert 400 <= failures <= 600 and bus.errors_injected == 2 + failures


# ------------------------------------------------------- the Adafruit driver


@pytest.mark.parametrize("range_name, range_g", [("RANGE_2_G", 2), ("RANGE_4_G", 4),
                                                 ("RANGE_8_G", 8), ("RANGE_16_G", 16)])
def test_adafruit_driver_reads_expected_acceleration_at_each_range(range_name, range_g):
    g = (0.5, -1.0, 1.5)
    chip = ADXL345Model(signals.constant(*g), clock=None)
    bus = FakeI2C()
    bus.attach(0x53, chip)
    accel = adafruit_adxl34x.ADXL345(bus)  # probes the address, sets Measure
    accel.data_rate = adafruit_adxl34x.DataRate.RATE_800_HZ
    accel.range = getattr(adafruit_adxl34x.Range, range_name)
    assert accel.data_rate == 0b1101 and accel.range == range_g.bit_length() - 2
    assert _byte(chip, REG_DATA_FORMAT) & 0x08  # the driver's range setter sets FULL_RES
    chip.advance_to(0.01)
    counts = [round(v * 256) for v in g]  # full resolution: 256 LSB/g at every range
    expected = [c * DRIVER_G_PER_LSB * STANDARD_GRAVITY for c in counts]
    assert accel.acceleration == pytest.approx(expected)
    assert (accel.raw_x, accel.raw_y, accel.raw_z) == tuple(counts)
    # the driver's 4 mg/LSB is 2.4 % above the chip's 3.9 mg/LSB (1/256 g): that is the
    # driver's approximation, so m/s^2 from it read 2.4 % high
    assert accel.acceleration[2] == pytest.approx(1.5 * STANDARD_GRAVITY * 1.024, rel=1e-3)


def test_adafruit_driver_reads_clipped_values_at_2g():
    chip = ADXL345Model(signals.constant(3.0, -3.0, 1.0))
    bus = FakeI2C()
    bus.attach(0x53, chip)
    accel = adafruit_adxl34x.ADXL345(bus)
    accel.range = adafruit_adxl34x.Range.RANGE_2_G
    chip.advance_to(0.1)
    assert (accel.raw_x, accel.raw_y, accel.raw_z) == (511, -512, 256)


def test_adafruit_driver_probe_fails_without_chip():
    with pytest.raises(ValueError):
        adafruit_adxl34x.ADXL345(FakeI2C())


# ------------------------------------------------------------- MicroPython

MICROPYTHON_SCRIPT = r"""
import struct
from fieldwatch.sim.adxl345 import ADXL345Model
from fieldwatch.sim.i2c import FakeI2C
from fieldwatch.sim import signals

def run():
    src = signals.synthetic(seed=5)
    chip = ADXL345Model(src)
    bus = FakeI2C()
    bus.attach(0x53, chip)
    assert bus.readfrom_mem(0x53, 0x00, 1) == b"\xe5"
    bus.writeto_mem(0x53, 0x2C, b"\x0d")  # 800 Hz
    bus.writeto_mem(0x53, 0x31, b"\x0b")  # FULL_RES, +/-16 g
    bus.writeto_mem(0x53, 0x38, b"\x90")  # stream, watermark 16
    bus.writeto_mem(0x53, 0x2d, b"\x08")  # measure
    buf = bytearray(6)
    total = 0
    checksum = 0
    t = 0.0
    for poll in range(50):
        t += 0.02
        chip.advance_to(t)
        n = bus.readfrom_mem(0x53, 0x39, 1)[0] & 0x3F
        for i in range(n):
            bus.readfrom_mem_into(0x53, 0x32, buf)
            x, y, z = struct.unpack("<hhh", buf)
            checksum = (checksum * 31 + x * 7 + y * 3 + z) & 0xFFFFFFFF
            total += 1
    chip.advance_to(t + 0.1)  # fall behind: 80 due, 32 kept
    status = bus.readfrom_mem(0x53, 0x30, 1)[0]
    print("samples", total, chip.samples_produced, chip.samples_dropped, status & 1, checksum)

run()
"""


def test_model_runs_under_micropython_with_identical_output(micropython, tmp_path):
    r = micropython(MICROPYTHON_SCRIPT, heapsize="100K", cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    words = r.stdout.split()
    assert words[0] == "samples"
    total, produced, dropped, overrun, checksum = map(int, words[1:])
    assert total == 800 and produced == 880 and dropped == 48 and overrun == 1
    # the same script under CPython gives the same samples, bit for bit
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(MICROPYTHON_SCRIPT, "<cpython>", "exec"), {"__name__": "cpython"})
    assert out.getvalue().split() == words
