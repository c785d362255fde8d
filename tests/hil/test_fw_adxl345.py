"""Firmware ADXL345 driver (firmware/adxl345.py) on MicroPython with a 100 KB heap:
FIFO stream mode against the register model fieldwatch/sim/adxl345.py, and a drain loop that
allocates nothing."""




NO_ALLOC = r"""
import gc
from adxl345 import ADXL345

class StaticBus:
    # A bus that allocates nothing itself (like the real machine.I2C), so what
    # gc.mem_alloc() sees is the driver's own allocation.
    def __init__(self):
        self.regs = bytearray(64)
        self.regs[0] = 0xE5
        self.regs[0x39] = 32     # FIFO_STATUS: always 32 entries waiting
        self.regs[0x30] = 0x01   # INT_SOURCE: overrun every time
        for i in range(6):
            self.regs[0x32 + i] = i + 1
    def readfrom_mem_into(self, addr, reg, buf):
        for i in range(len(buf)):
            buf[i] = self.regs[reg + i]
    def writeto_mem(self, addr, reg, buf):
        pass

drv = ADXL345(StaticBus(), rate_hz=800, range_g=16, watermark=16)
window = bytearray(6 * 800)      # one second at 800 Hz, allocated once

def measure():
    # locals only: a new global name would grow the module dict (an allocation
    # that is the test's, not the driver's)
    total = 0
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for k in range(25):
        total += drv.drain(window, k * 32, 32)
    after = gc.mem_alloc()
    gc.enable()
    return after - before, total

alloc, total = measure()
print("alloc", alloc, "entries", total, "overruns", drv.overruns, "bytes", window[6], window[11])
"""


def test_fw_adxl_drain_allocates_nothing(micropython, fw_path, tmp_path):
    r = micropython(NO_ALLOC, heapsize="100K", path=fw_path, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    print(r.stdout.strip())
    words = r.stdout.split()
    assert words[1] == "0", "drain() allocated %s bytes for 800 samples" % words[1]
    assert words[3] == "800" and words[5] == "25"
    assert words[7:9] == ["1", "6"]


FIFO = r"""
import struct
from fieldwatch.sim import signals
from fieldwatch.sim.i2c import FakeI2C
from fieldwatch.sim.adxl345 import ADXL345Model
from adxl345 import ADXL345

src = signals.counter()
chip = ADXL345Model(src)
bus = FakeI2C()
bus.attach(0x53, chip)
drv = ADXL345(bus, rate_hz=800, range_g=16, watermark=16)
buf = bytearray(6 * 32)
t = 0.0
expected = None
gaps = 0
got = 0
def take(n):
    global expected, gaps, got
    for i in range(n):
        x, y, z = struct.unpack_from("<hhh", buf, 6 * i)
        idx = src.index_of(x, y)
        if expected is not None and idx != expected:
            gaps += 1
        expected = idx + 1
        got += 1
# 1) drained every 20 ms (16 entries at 800 Hz): contiguous, no overrun
for step in range(100):
    t += 0.02
    chip.advance_to(t)
    n = drv.drain(buf, 0, 32)
    take(n)
print("phase1", got, gaps, drv.overruns)
# 2) a 100 ms stall: the FIFO fills (80 samples due, 32 kept): one overrun, one gap
t += 0.1
chip.advance_to(t)
n = drv.drain(buf, 0, 32)
take(n)
print("phase2", n, gaps, drv.overruns)
# 3) range/rate change keeps working
drv.configure(400, 2, 8)
t += 0.04
chip.advance_to(t)
n = drv.drain(buf, 0, 32)
print("phase3", n, drv.rate_hz, drv.range_g)
"""


def test_fw_adxl_fifo_stream_against_chip_model(micropython, fw_path, tmp_path):
    r = micropython(FIFO, heapsize="100K", path=fw_path, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    lines = dict((ln.split()[0], ln.split()[1:]) for ln in r.stdout.splitlines())
    got, gaps, overruns = map(int, lines["phase1"])
    assert 1590 <= got <= 1601 and gaps == 0 and overruns == 0, lines
    n, gaps, overruns = map(int, lines["phase2"])
    assert n == 32 and gaps == 1 and overruns == 1, lines
    n, rate, rng = lines["phase3"]
    assert 15 <= int(n) <= 17 and rate == "400" and rng == "2"


def test_fw_adxl_wrong_devid_is_reported(micropython, fw_path, tmp_path):
    code = ("from fieldwatch.sim.i2c import FakeI2C\n"
            "from adxl345 import ADXL345, ADXL345Error\n"
            "class Dev:\n"
            "    def read_register(self, reg, n): return bytes(n)\n"
            "    def write_register(self, reg, d): pass\n"
            "bus = FakeI2C(); bus.attach(0x53, Dev())\n"
            "try:\n"
            "    ADXL345(bus)\n"
            "except ADXL345Error as e:\n"
            "    print('error', e)\n")
    r = micropython(code, heapsize="100K", path=fw_path, cwd=str(tmp_path))
    assert "error DEVID 0x00, expected 0xe5" in r.stdout, r.stdout + r.stderr
