"""The firmware application (firmware/app.py) on the MicroPython Unix port with the
board's 100 KB heap: the ADXL345 register model in a chip host (tools/sim_board.ChipHost)
behind the fake machine.I2C, everything else the real firmware, compiled with mpy-cross.

- the hot sampling loop (App.sample() draining the FIFO mid-window) allocates nothing;
- a waveform block written from the window buffer (header + samples, never joined in
  RAM) is byte for byte what wire.codec.encode_wave makes, and a big record is streamed
  back from flash (ring.Stored) rather than read into the heap;
- a run healthy for 60 s clears the crash-loop guard's count, its module loaded only
  for that moment;
- the firmware loads only the device part of the wire contract (fieldwatch.wire.contract
  and .device, never .validate, .batch or .codec), and that part gives the same answers
  as the full codec under CPython: all cmd and ack golden vectors, and the encoders the
  firmware calls.
"""

import json

import pytest

from fieldwatch.devservices.micropython import REPO_ROOT
from fieldwatch.tools.sim_board import ChipHost
from fieldwatch.wire import codec

HEAP = "100K"
VECTORS = REPO_ROOT / "tests" / "vectors" / "wire_v1.json"


@pytest.fixture
def chip():
    host = ChipHost()
    yield host
    host.close()


APP = r"""
import sys, time, gc
import config
cfg, problems = config.validate({"device_id": "fw-app", "wifi_ssid": "lab",
    "broker": "mqtt://127.0.0.1:9", "rate_hz": 400, "window_s": 1, "ntp_host": None,
    "wave_every_s": 0})
assert not problems, problems
del config
del sys.modules["config"]
import app
a = app.App(cfg, sys.argv[1])
"""

NO_ALLOC = APP + r"""
time.sleep_ms(20)
a.sample()                     # starts the window (stamps its time: that allocates)
assert 0 < a.filled < a.window_n, a.filled

def measure(a, sleep_ms, calls):
    # locals only, nothing printed inside: what mem_alloc sees is the loop's own
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for _ in range(calls):
        time.sleep_ms(sleep_ms)
        a.sample()
    after = gc.mem_alloc()
    gc.enable()
    return after - before

filled = a.filled
alloc = measure(a, 5, 20)
print("alloc", alloc, "entries", a.filled - filled, "window", a.window_n, "overruns", a.adxl.overruns)
"""


def test_fw_app_hot_sampling_loop_allocates_nothing(micropython, fw_path, chip, tmp_path):
    r = micropython(NO_ALLOC, args=[str(tmp_path) + "/"], heapsize=HEAP, path=fw_path,
                    cwd=str(tmp_path), env={"FW_I2C": chip.address}, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    words = r.stdout.split()
    alloc, entries, window = int(words[1]), int(words[3]), int(words[5])
    # the loop really drained the FIFO (the chip samples at 400 Hz while we sleep),
    # and did not reach the end of the window (where features are computed)
    assert 0 < entries and words[6] == "overruns"
    assert alloc == 0, r.stdout


OVERRUN = APP + r"""
time.sleep_ms(20)
a.sample()                     # a partial window
before = a.filled
time.sleep_ms(200)             # 80 samples at 400 Hz: the 32-entry FIFO overruns
a.sample()
print(before, a.filled, a.adxl.overruns, a.windows_discarded, a.windows, a.outbox.depth())
"""


def test_fw_app_window_spanning_an_overrun_is_discarded(micropython, fw_path, chip, tmp_path):
    # As the Pi agent: samples were lost between the partial window and the next read,
    # so that window is dropped and counted, and what was read after the gap starts the next.
    r = micropython(OVERRUN, args=[str(tmp_path) + "/"], heapsize=HEAP, path=fw_path,
                    cwd=str(tmp_path), env={"FW_I2C": chip.address}, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    before, filled, overruns, discarded, windows, depth = map(int, r.stdout.split())
    assert before > 0 and overruns == 1 and discarded == 1
    assert 0 < filled <= 32            # only the FIFO read after the gap
    assert windows == 0 and depth == 0


WAVE = APP + r"""
import struct
n = int(sys.argv[2])
for k in range(n):
    struct.pack_into("<hhh", a.window, 6 * k, 3 * k - 500, -7 * k, 256 + k)
a._wave(n, 1767225600123, "ntp")
rec = a.outbox.next_to_send(0)
kind, boot, seq, count, payload = rec
stored = not isinstance(payload, bytes)
with open(sys.argv[3], "wb") as f:
    if stored:
        payload.send_to(f.write)     # streamed from flash, as uplink.Link sends it
    else:
        f.write(payload)
print(kind, boot, seq, count, a.adxl.rate_hz, a.adxl.range_g, "stored" if stored else "bytes")
"""


@pytest.mark.parametrize("n", [32, 128])
def test_fw_app_wave_block_matches_codec(micropython, fw_path, chip, tmp_path, n):
    out = tmp_path / "payload.bin"
    r = micropython(WAVE, args=[str(tmp_path) + "/", n, str(out)], heapsize=HEAP, path=fw_path,
                    cwd=str(tmp_path), env={"FW_I2C": chip.address}, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    kind, boot, seq, count, rate, range_g, how = r.stdout.split()
    data = out.read_bytes()
    samples = bytearray()
    for k in range(n):
        samples += (3 * k - 500).to_bytes(2, "little", signed=True)
        samples += (-7 * k).to_bytes(2, "little", signed=True)
        samples += (256 + k).to_bytes(2, "little", signed=True)
    want = codec.encode_wave("fw-app", int(boot), int(seq), 1767225600123, "ntp", float(rate),
                             1 / 256, int(range_g), 3, n, bytes(samples))
    assert (kind, count) == ("wave", "1")
    assert data == want
    decoded = codec.decode_wave("fw-app", data)
    assert decoded["n"] == n and decoded["seq"] == int(seq)
    # 32 samples make a 229-byte record, read into RAM; 128 make 805 bytes, left on flash
    assert how == ("stored" if len(data) > 512 else "bytes")


HEALTHY = r"""
import sys, time
import safemode
safemode.boot()                  # as boot.py: this boot may be a crash
safemode.boot()
del sys.modules["safemode"]      # as main.py: dropped before the application
del safemode
""" + APP + r"""
print("before", "safemode" in sys.modules, a.healthy)
a.step()
print("early", "safemode" in sys.modules, a.healthy)
a.started = time.ticks_add(time.ticks_ms(), -61000)    # as if it had run for 61 s
a.step()
with open("crashes") as f:
    print("after", "safemode" in sys.modules, a.healthy, f.read())
"""


def test_fw_app_healthy_run_clears_the_crash_guard_and_drops_its_module(micropython, fw_path, chip, tmp_path):
    # The crash-loop guard's module is imported only when the run has been healthy
    # for 60 s, to clear the count, and dropped again: its ~1 KB stays out of the heap.
    r = micropython(HEALTHY, args=[str(tmp_path) + "/"], heapsize=HEAP, path=fw_path,
                    cwd=str(tmp_path), env={"FW_I2C": chip.address}, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.split()[0] in ("before", "early", "after")]
    assert lines == ["before False False", "early False False", "after False True 0"], r.stdout


LOADED = APP + r"""
wire = sorted([m for m in sys.modules if m.startswith("fieldwatch")])
print(" ".join(wire))
"""


def test_fw_app_loads_only_the_device_part_of_the_wire_contract(micropython, fw_path, chip, tmp_path):
    r = micropython(LOADED, args=[str(tmp_path) + "/"], heapsize=HEAP, path=fw_path,
                    cwd=str(tmp_path), env={"FW_I2C": chip.address}, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    loaded = r.stdout.split()
    assert loaded == ["fieldwatch", "fieldwatch.wire", "fieldwatch.wire.contract",
                      "fieldwatch.wire.device", "fieldwatch.wire.topics"], r.stdout


DEVICE = r"""
import sys, json
from fieldwatch.wire import device
from fieldwatch.wire.contract import WireError

with open(sys.argv[1]) as f:
    for line in f:
        topic, text = json.loads(line)
        try:
            print(json.dumps(["decoded", device.decode_downlink(topic, text.encode())]))
        except WireError as e:
            print(json.dumps(["error", e.code]))
fx = [{"dt": 0, "mode": 3, "lat_e7": 481173000, "lon_e7": 115166667, "sats": 8}]
win = [{"dt": 0, "len_ms": 1000, "rate_hz": 400, "n": 400,
        "x": {"rms": 0.1, "peak": 0.3, "crest": 3.0, "dom_hz": 50.0},
        "y": {"rms": 0.1, "peak": 0.3, "crest": 3.0, "dom_hz": 50.0},
        "z": {"rms": 0.1, "peak": 0.3, "crest": 3.0, "dom_hz": 50.0}}]
for out in (device.encode_fixes("d-1", 3, 10, 1767225600000, "gps", fx),
            device.encode_features("d-1", 3, 11, 1767225600000, "ntp", win),
            device.encode_result("d-1", 3, 12, 1767225600000, "ntp", "c-1", "capture", True, {"n": 64}),
            device.encode_result("d-1", 3, 13, 1767225600000, "ntp", "c-2", "set_rate", False, None, "E"),
            device.encode_status("d-1", 3, 14, 1767225600000, "ntp", "online", "0.1", "hw",
                                 "power_on", 2, 0, 1, {"mem_free": 5})):
    print(json.dumps(["encoded", json.loads(out)]))
print(json.dumps(["covers", device.covers([(3, 0, 9)], 3, 4), device.covers([(3, 0, 9)], 3, 10)]))
"""


def _full_codec_answers(cases):
    # What CPython's full codec says to the same inputs, as the device script prints them.
    out = []
    for c in cases:
        try:
            out.append(["decoded", json.loads(json.dumps(codec.decode(c["topic"], c["payload_text"].encode())))])
        except codec.WireError as e:
            out.append(["error", e.code])
    fx = [{"dt": 0, "mode": 3, "lat_e7": 481173000, "lon_e7": 115166667, "sats": 8}]
    axis = {"rms": 0.1, "peak": 0.3, "crest": 3.0, "dom_hz": 50.0}
    win = [{"dt": 0, "len_ms": 1000, "rate_hz": 400, "n": 400, "x": axis, "y": axis, "z": axis}]
    for enc in (codec.encode_fixes("d-1", 3, 10, 1767225600000, "gps", fx),
                codec.encode_features("d-1", 3, 11, 1767225600000, "ntp", win),
                codec.encode_result("d-1", 3, 12, 1767225600000, "ntp", "c-1", "capture", True, {"n": 64}),
                codec.encode_result("d-1", 3, 13, 1767225600000, "ntp", "c-2", "set_rate", False, None, "E"),
                codec.encode_status("d-1", 3, 14, 1767225600000, "ntp", "online", "0.1", "hw",
                                    "power_on", 2, 0, 1, {"mem_free": 5})):
        out.append(["encoded", json.loads(enc)])
    out.append(["covers", True, False])
    return out


def test_fw_device_wire_gives_the_full_codecs_answers(micropython, fw_path, tmp_path):
    cases = [c for c in json.loads(VECTORS.read_text()) if not c.get("heavy")
             and "payload_text" in c and c["topic"].rsplit("/", 1)[-1] in ("cmd", "ack")]
    assert len(cases) > 40
    assert any("error" in c for c in cases) and any("expect" in c for c in cases)
    lines = tmp_path / "cases.jsonl"
    lines.write_text("".join(json.dumps([c["topic"], c["payload_text"]]) + "\n" for c in cases))
    r = micropython(DEVICE, args=[str(lines)], heapsize=HEAP, path=fw_path, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    got = [json.loads(line) for line in r.stdout.splitlines()]
    assert got == _full_codec_answers(cases)
