"""The edge agent's accelerometer reader (edge_agent/accel.py): the real Adafruit driver and
our FIFO code against the simulated ADXL345 on a stepped clock. A counter source makes
every sample identifiable, so the tests prove that nothing is lost or read twice."""

import glob
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_agent.accel import Accelerometer, AccelerometerInterface, RATES_HZ
from fieldwatch.sim import signals

CWRU_97 = Path(__file__).resolve().parents[1] / "data" / "vibration" / "cwru_97_normal_de_12k.csv"


class SteppedClock:
    """Simulated time: tests move it forward; optionally bus traffic takes time too."""

    def __init__(self, t=0.0):
        self.t = t
        self.bus = None
        self.frequency = None

    def on_bus(self, bus, frequency):
        """Make every transaction on bus take its real duration at frequency Hz."""
        self.bus = bus
        self.frequency = frequency

    def __call__(self):
        if self.bus is not None:
            return self.t + self.bus.bus_seconds(self.frequency)
        return self.t


class Jitter:
    """Deterministic pseudo-random factors in [low, high)."""

    def __init__(self, seed=1):
        self.state = seed

    def __call__(self, low, high):
        self.state = (self.state * 1103515245 + 12345) & 0x7FFFFFFF
        return low + (high - low) * self.state / 2147483648.0


def fresh_counter_accel(rate_hz, watermark=16, range_g=16):
    """An opened simulated reader fed by a counter source, its clock and the source."""
    clock = SteppedClock()
    source = signals.counter()
    accel = Accelerometer.create(hardware="sim", source=source, clock=clock)
    accel.open(rate_hz, range_g, watermark)
    return accel, clock, source


def indices(samples, source):
    """Sample indices encoded in a batch of int16 counts."""
    return [source.index_of(x, y) for x, y, _ in samples]


def assert_consecutive(seen):
    assert seen == list(range(seen[0], seen[0] + len(seen))), "samples lost or duplicated"


@pytest.mark.parametrize("rate", [100, 400, 800, 1600, 3200])
def test_agent_reads_every_sample_exactly_once(rate):
    accel, clock, source = fresh_counter_accel(rate)
    seen = []
    jitter = Jitter(rate)
    while len(seen) < 3000:
        clock.t += jitter(4, 28) / rate  # irregular polls, never 32 samples apart
        samples, overrun = accel.read_fifo()
        assert samples.dtype == np.int16 and samples.shape[1:] == (3,)
        assert not overrun
        seen += indices(samples, source)
        assert np.all(samples[:, 2] == 256)  # 1 g on z, full resolution
    assert seen[0] == 0
    assert_consecutive(seen)
    chip = accel.chip
    assert chip.samples_dropped == 0
    assert len(seen) + chip.fifo_entries == chip.samples_produced
    assert accel.samples_read == len(seen) and accel.overruns == 0 and accel.i2c_errors == 0
    assert accel.rate_hz == rate


@pytest.mark.parametrize("rate, frequency, idle", [(800, 400000, 12), (3200, 400000, 4)])
def test_agent_reads_every_sample_while_samples_arrive_during_the_read(rate, frequency, idle):
    """Bus traffic takes its real time, so the FIFO grows while it is being drained."""
    accel, clock, source = fresh_counter_accel(rate)
    clock.on_bus(accel.bus, frequency)
    seen = []
    bits_before, started = accel.bus.bits, clock()
    while len(seen) < 4000:
        clock.t += idle / rate
        samples, overrun = accel.read_fifo()
        seen += indices(samples, source)
    busy = (accel.bus.bits - bits_before) / frequency / (clock() - started)
    assert_consecutive(seen)
    assert accel.chip.samples_dropped == 0 and accel.overruns == 0
    # 84 SCL cycles per sample (1 + 6 byte write-then-read) plus two status reads per poll:
    # 800 Hz takes ~17 % of a 400 kHz bus, 3200 Hz ~67 %
    assert rate * 84 / frequency < busy < rate * 84 / frequency + 0.1


def test_agent_bus_slower_than_the_data_rate_loses_samples_and_says_so():
    """3200 Hz over a 100 kHz bus: 840 us per sample read, 312 us per sample made."""
    rate, frequency = 3200, 100000
    accel, clock, source = fresh_counter_accel(rate)
    clock.on_bus(accel.bus, frequency)
    batches = []
    for _ in range(100):
        clock.t += 1 / rate
        samples, overrun = accel.read_fifo()
        batches.append((indices(samples, source), overrun))
    seen = [i for batch, _ in batches for i in batch]
    assert seen == sorted(set(seen))  # order kept, nothing read twice
    gaps = sum(b - a - 1 for a, b in zip(seen, seen[1:])) + seen[0]
    assert gaps == accel.chip.samples_dropped > 0
    # every batch that starts after lost samples, or has a hole, comes with the overrun flag
    previous = -1
    for batch, overrun in batches:
        if batch and batch != list(range(previous + 1, previous + 1 + len(batch))):
            assert overrun
        if batch:
            previous = batch[-1]
    assert accel.overruns == sum(1 for _, overrun in batches if overrun) > 90


def test_agent_slow_polling_detects_overrun_and_counts_lost_samples():
    rate = 800
    accel, clock, source = fresh_counter_accel(rate)
    seen = []
    overrun_polls = 0
    for i in range(50):
        clock.t += 50 / rate  # 50 samples between polls: 18 lost each time
        samples, overrun = accel.read_fifo()
        overrun_polls += overrun
        assert len(samples) == 32
        seen += indices(samples, source)
    chip = accel.chip
    # every poll saw the overrun, and the reader counted each one
    assert overrun_polls == 50 and accel.overruns == 50
    # the gaps in what was read are exactly the samples the chip dropped
    gaps = sum(b - a - 1 for a, b in zip(seen, seen[1:])) + seen[0]
    assert seen == sorted(set(seen))  # nothing read twice, order kept
    assert gaps == chip.samples_dropped == 50 * 50 - 50 * 32
    assert len(seen) + chip.samples_dropped + chip.fifo_entries == chip.samples_produced


def test_agent_one_stall_among_fast_polls_is_one_overrun():
    rate = 1600
    accel, clock, source = fresh_counter_accel(rate)
    seen = []
    for i in range(100):
        clock.t += (100 if i == 60 else 10) / rate
        samples, overrun = accel.read_fifo()
        assert overrun == (i == 60)
        seen += indices(samples, source)
    assert accel.overruns == 1
    lost = [b - a - 1 for a, b in zip(seen, seen[1:]) if b != a + 1]
    assert lost == [accel.chip.samples_dropped] == [100 - 32 + (10 * 60 - 10 * 60)]


def test_agent_flush_empties_a_full_fifo_without_an_overrun():
    rate = 1600
    accel, clock, source = fresh_counter_accel(rate)
    clock.t += 100 / rate           # the FIFO filled (and overflowed) before anyone read it
    accel.flush()
    samples, overrun = accel.read_fifo()
    assert len(samples) == 0 and not overrun
    assert accel.samples_discarded == 32 and accel.overruns == 0
    clock.t += 10 / rate            # sampling goes on from there, nothing lost
    samples, overrun = accel.read_fifo()
    assert not overrun and indices(samples, source) == list(range(100, 110))


def test_agent_sampler_started_after_the_fifo_filled_reports_no_overrun():
    # The agent opens the sensor, then builds the uplink, GPS and indicator before its sampler
    # starts: longer than the FIFO lasts. Those samples were never ours to lose.
    from edge_agent.sampler import Sampler

    rate = 100
    accel = Accelerometer.create(hardware="sim", source="counter").open(rate, 16, 16)
    time.sleep(40 / rate)          # 32 samples fill the FIFO in 0.32 s
    sampler = Sampler(accel, threading.Lock(), 0.05)
    sampler.start()
    time.sleep(0.5)
    sampler.stop()
    chunks = []
    while not sampler.chunks.empty():
        chunks.append(sampler.chunks.get())
    assert chunks and sum(len(c[1]) for c in chunks) >= 0.3 * rate
    assert [c[2] for c in chunks] == [False] * len(chunks) and accel.overruns == 0
    assert accel.samples_discarded >= 32


def test_agent_i2c_error_is_counted_and_the_reader_recovers():
    rate = 800
    accel, clock, source = fresh_counter_accel(rate)
    bus = accel.bus
    seen = []
    clock.t += 10 / rate
    bus.fail_next(count=1)  # the first read of the poll (INT_SOURCE) fails
    samples, overrun = accel.read_fifo()
    assert len(samples) == 0 and accel.i2c_errors == 1
    clock.t += 10 / rate
    bus.fail_next(count=1, after=2 + 5)  # status reads and 5 entries succeed, the 6th fails
    samples, overrun = accel.read_fifo()
    assert len(samples) == 5 and accel.i2c_errors == 2
    seen += indices(samples, source)
    clock.t += 10 / rate
    samples, overrun = accel.read_fifo()  # the other 25 are still in the FIFO
    seen += indices(samples, source)
    assert seen == list(range(30)) and accel.overruns == 0 and accel.samples_read == 30


def test_agent_random_i2c_errors_lose_nothing():
    rate = 800
    accel, clock, source = fresh_counter_accel(rate)
    accel.bus.error_rate = 0.02  # ~20 % of polls hit an error somewhere
    seen = []
    while len(seen) < 4000:
        clock.t += 4 / rate  # polls often enough to absorb several failed polls in a row
        samples, overrun = accel.read_fifo()
        seen += indices(samples, source)
    assert_consecutive(seen)
    assert accel.i2c_errors == accel.bus.errors_injected > 50
    assert accel.overruns == 0 and accel.chip.samples_dropped == 0


@pytest.mark.parametrize("range_g", [2, 4, 8, 16])
def test_agent_counts_scale_to_g_at_every_range(range_g):
    clock = SteppedClock()
    accel = Accelerometer.create(hardware="sim", source=signals.constant(0.25, -0.5, 1.0),
                                 clock=clock)
    accel.open(400, range_g, 10)
    clock.t += 0.05
    samples, _ = accel.read_fifo()
    assert len(samples) == 20
    assert accel.range_g == range_g and accel.scale_g == pytest.approx(0.0039, rel=2e-3)
    assert np.allclose(samples * accel.scale_g, [0.25, -0.5, 1.0])


def test_agent_accelerometer_implements_every_member_of_the_interface():
    # The agent uses nothing but AccelerometerInterface; the reader (real I2C or the
    # simulated chip behind FakeI2C, the same class) overrides every member it declares.
    declared = [name for name, member in vars(AccelerometerInterface).items()
                if not name.startswith("_") and name != "samples_g"]
    assert set(declared) >= {"rate_hz", "range_g", "scale_g", "open", "read_fifo", "flush", "set_rate",
                             "set_range", "sleep", "wake", "close"}
    base = AccelerometerInterface()
    assert (base.overruns, base.i2c_errors) == (0, 0)
    for name in declared:
        assert vars(Accelerometer).get(name) is not None, "Accelerometer does not implement %s" % name
        with pytest.raises(NotImplementedError):
            member = getattr(base, name)      # a property raises here, a method when called
            member(*[1] * (member.__code__.co_argcount - 1))
    accel = Accelerometer.create(hardware="sim", source="rest")
    assert isinstance(accel, AccelerometerInterface) and (accel.overruns, accel.i2c_errors) == (0, 0)


def test_agent_samples_come_in_g_with_the_raw_counts_beside():
    clock = SteppedClock()
    accel = Accelerometer.create(hardware="sim", source=signals.constant(0.25, -0.5, 1.0), clock=clock)
    accel.open(400, 4, 10)
    clock.t += 0.05
    counts, _ = accel.read_fifo()
    g = accel.samples_g(counts)
    assert counts.dtype == np.int16 and g.dtype == np.float64 and g.shape == (20, 3)
    assert np.array_equal(g, counts.astype(np.float64) * accel.scale_g)
    assert np.allclose(g, [0.25, -0.5, 1.0], atol=accel.scale_g)


def test_agent_set_range_while_streaming_keeps_the_scale():
    accel, clock, source = fresh_counter_accel(800, range_g=16)
    clock.t += 10 / 800
    accel.set_range(2)
    clock.t += 10 / 800
    samples, _ = accel.read_fifo()
    assert indices(samples, source) == list(range(20))
    assert accel.driver.range == 0 and np.all(samples[:, 2] == 256)


def test_agent_set_rate_sleep_and_wake():
    accel, clock, source = fresh_counter_accel(800)
    clock.t += 10 / 800
    accel.set_rate(100)
    assert accel.rate_hz == 100 and accel.chip.output_data_rate == 100
    assert accel.samples_discarded == 10
    clock.t += 0.1
    samples, _ = accel.read_fifo()
    assert len(samples) == 10 and accel.poll_interval_s == pytest.approx(0.16)
    accel.sleep()
    clock.t += 1.0
    samples, _ = accel.read_fifo()
    assert len(samples) == 0 and accel.chip.output_data_rate == 0
    accel.wake()
    clock.t += 0.1
    samples, _ = accel.read_fifo()
    assert len(samples) == 10
    assert_consecutive(indices(samples, source))


def test_agent_open_rejects_unsupported_settings():
    accel, clock, source = fresh_counter_accel(800)
    for bad in (dict(rate_hz=1000), dict(range_g=3), dict(watermark=0), dict(watermark=32)):
        with pytest.raises(ValueError):
            accel.open(**bad)
    with pytest.raises(ValueError):
        Accelerometer.create(hardware="spi")
    with pytest.raises(ValueError):
        Accelerometer.create(hardware="sim", source="no-such-signal")
    assert sorted(RATES_HZ)[-1] == 3200 and len(RATES_HZ) == 16


def test_agent_read_before_open_is_an_error():
    accel = Accelerometer.create(hardware="sim", clock=SteppedClock())
    with pytest.raises(RuntimeError):
        accel.read_fifo()


def test_agent_recording_source_follows_the_rate():
    clock = SteppedClock()
    accel = Accelerometer.create(hardware="sim", source=str(CWRU_97), clock=clock)
    accel.open(800, 16, 16)
    assert len(accel.chip.source.samples) == 1600
    clock.t += 20 / 800
    samples, _ = accel.read_fifo()
    expected = np.round(accel.chip.source.samples[1:21] * 256)
    assert np.array_equal(samples[:, 0], expected) and np.all(samples[:, 2] == 256)
    accel.set_rate(400)
    assert len(accel.chip.source.samples) == 800


def test_agent_simulated_chip_runs_on_the_wall_clock():
    accel = Accelerometer.create(hardware="sim", source="rest").open(400, 16, 16)
    time.sleep(0.04)
    samples, overrun = accel.read_fifo()
    assert 8 <= len(samples) <= 32 and not overrun
    assert np.allclose(samples.mean(axis=0) * accel.scale_g, [0, 0, 1], atol=0.01)


def _real_i2c_present():
    return os.environ.get("FIELDWATCH_REAL_ADXL345") == "1"


@pytest.mark.parametrize("hardware", ["sim", "real"])
def test_agent_contract_at_rest_reads_one_g(hardware):
    """The same checks on every implementation; real hardware only when asked for."""
    if hardware == "real" and not _real_i2c_present():
        pytest.skip("set FIELDWATCH_REAL_ADXL345=1 on a Raspberry Pi with an ADXL345 at 0x53")
    kwargs = {"source": "rest"} if hardware == "sim" else {}
    accel = Accelerometer.create(hardware=hardware, **kwargs)
    try:
        assert accel.read_register(0x00) == 0xE5
        accel.open(100, 2, 8)
        time.sleep(0.15)
        samples, overrun = accel.read_fifo()
        assert 8 <= len(samples) <= 32
        magnitude = np.linalg.norm(samples.mean(axis=0)) * accel.scale_g
        assert magnitude == pytest.approx(1.0, abs=0.1)
    finally:
        accel.close()


def test_agent_real_hardware_missing_is_one_clear_line(tmp_path):
    """`--hardware real` where Blinka knows no I2C bus (this PC, a Pi with I2C off): a message, exit 1, no traceback."""
    if _real_i2c_present():
        pytest.skip("an ADXL345 is wired here: the agent would run")
    exe = os.path.join(os.path.dirname(sys.executable), "edge-agent")
    r = subprocess.run([exe, "run", "--device-id", "no-i2c", "--hardware", "real", "--state-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=60,
                       env=dict(os.environ, MQTT_URL="mqtt://127.0.0.1:1"))
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = [line for line in r.stderr.splitlines() if line.startswith("edge-agent: ")]
    assert len(lines) == 1 and lines[0].startswith("edge-agent: cannot open the real accelerometer: "), r.stderr
    if not glob.glob("/dev/i2c-*"):
        assert "hardware = \"sim\"" in lines[0], lines[0]
