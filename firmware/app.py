# The application: sample -> features per window -> outbox -> MQTT, plus GPS fixes,
# waveform blocks, commands and the watchdog.
#
# One cooperative loop (no threads, no asyncio), each step short:
#   feed the watchdog
#   drain the ADXL345 FIFO into the window buffer  (no allocation, every <= 20 ms)
#   window full -> features record into the outbox (+ a waveform block when due)
#   read the GPS UART (rxbuf 512 B covers 0.5 s at 9600 baud) -> fixes, GPS time
#   Wi-Fi / MQTT (re)connect when their backoff allows; NTP when the clock is unset
#   send a few outbox records (QoS 1), handle incoming acks and commands
#   republish the retained status every status_every_s (and at once after a change of
#   state), so the collector sees the buffer, the next seq and the heap as they are now
# Budget: at 800 Hz the FIFO (32 entries) fills in 40 ms; sending is capped at
# _SEND_PER_STEP records per step so a backlog never starves sampling.
#
# Records keys are (boot, seq); time stamps come from clock.Clock (tq none/rtc/ntp/gps).

import gc
import sys
import time

import machine
from micropython import const

import keys
from clock import Clock
from adxl345 import ADXL345, SCALE_G, ADXL345Error
from features import Features
from uplink import Link
from nmea import NMEAParser
from ring import Ring
from fieldwatch.wire import device

FW_VERSION = "0.1.0"
HW = "esp32-devkitc"
# Private const()s: compiled into the bytecode, no name or object in the heap.
_SEND_PER_STEP = const(8)
_FIX_BATCH = const(5)           # fixes per fix record (one a second from most receivers):
                                # ~450 B of JSON, a size a fragmented 100 KB heap still finds
_HEALTHY_AFTER_MS = const(60000)
_NTP_EVERY_MS = const(21600000)  # 6 h
_REMEMBERED = const(8)          # command ids answered: a repeat is neither run nor answered again

_RESET_NAMES = {1: "power_on", 2: "hard", 3: "watchdog", 4: "deep_sleep", 5: "soft"}


class App:
    """The device: build with a validated config; step() once per loop iteration."""

    def __init__(self, cfg, data_dir="/", wifi=None, room=None):
        # room: a list holding a buffer reserved before the imports (main.py); emptied
        # here so the window can take its place
        if room:
            room.pop()
        gc.collect()
        self.cfg = cfg
        # the big buffers first, while the free heap is still in one piece (after the
        # imports it is full of small holes that a 1 KB buffer may no longer fit)
        self.window = None
        self._alloc_window(cfg["rate_hz"])
        self.features = Features()
        self.dev = cfg["device_id"]
        self.keys = keys.Keys(data_dir + "bootcount")
        self.boot = self.keys.boot
        self.clock = Clock()
        self.clock.from_rtc()
        seg = 8192
        # 8 records in flight: 1 feature window a second needs no more, and each costs
        # a small list on the heap until its ack
        self.outbox = Ring(data_dir + "outbox", segment_bytes=seg,
                           max_segments=max(2, cfg["outbox_kb"] * 1024 // seg), window=8)
        self.reset = _RESET_NAMES.get(machine.reset_cause(), "unknown")
        # sensor
        i2c = machine.I2C(0, scl=machine.Pin(cfg["i2c_scl"]), sda=machine.Pin(cfg["i2c_sda"]),
                          freq=400000)
        self.adxl = ADXL345(i2c, rate_hz=cfg["rate_hz"], range_g=cfg["range_g"], watermark=16)
        # GPS
        self.uart = machine.UART(2, baudrate=cfg["gps_baud"], tx=cfg["gps_tx"], rx=cfg["gps_rx"],
                                 rxbuf=512)
        self.gps = NMEAParser()
        self.fixes = []
        # network
        self.wifi = wifi
        self.link = Link(self.dev, cfg["broker_host"], cfg["broker_port"], cfg.get("mqtt_user"), cfg.get("mqtt_password"),
                         keepalive=60, timeout_s=5)
        self.wdt = machine.WDT(timeout=cfg["wdt_ms"])
        self.started = time.ticks_ms()
        self.healthy = False
        self.sleeping = False
        self.sleep_until = None         # ticks_ms to wake at; None while asleep: until `wake`
        self.answered = []              # the last _REMEMBERED command ids
        self.capture_n = 0
        self.last_wave = time.ticks_ms()
        self.last_ntp = None
        self.windows = 0
        self.windows_discarded = 0
        # the next periodic status (the birth at each connect is one too)
        self.status_at = time.ticks_add(self.started, cfg["status_every_s"] * 1000)

    def _alloc_window(self, rate_hz):
        # One window of raw entries, allocated when the rate needs a bigger one (never
        # per sample; a smaller window reuses the buffer). When the heap has no room for
        # it, the old size is allocated again (its hole was just freed) and MemoryError
        # raised: the window stays as it was, never None.
        n = int(rate_hz * self.cfg["window_s"])
        n = max(16, min(n, 1024))  # <= 6 KB of heap
        self.filled = 0
        self.window_t0 = None
        w = self.window
        if w is None or len(w) < 6 * n:
            size = 6 * n if w is None else len(w)
            self.window = w = None
            gc.collect()
            try:
                self.window = bytearray(6 * n)
            except MemoryError:
                self.window = bytearray(size)
                raise
        self.window_n = n

    # ---- records -----------------------------------------------------------------------
    def _store(self, kind, n, encode, tail=None):
        # encode(seq, t0, tq) -> payload (+ tail: bytes-like stored after it);
        # key (boot, seq .. seq+n-1)
        self.boot, seq = self.keys.take(n)
        tq, t0 = self.clock.now()
        self.outbox.append(kind, self.boot, seq, n, encode(seq, t0, tq), tail)

    def status(self, state):
        """Encoded status message (birth, will, the periodic one): buffer, next key, health."""
        if state == "online" and self.sleeping:
            state = "sleeping"
        tq, t0 = self.clock.now()
        ob = self.outbox
        # health names as the Pi agent's where they mean the same (edge_agent/status.py)
        health = {"fifo_overruns": self.adxl.overruns, "windows": self.windows,
                  "windows_discarded": self.windows_discarded,
                  "nmea_bad": self.gps.bad_checksum, "torn": ob.torn,
                  "reconnects": self.link.connects, "mem_free": gc.mem_free()}
        return device.encode_status(self.dev, self.keys.boot, self.keys.seq, t0, tq, state, FW_VERSION,
                                    HW, self.reset, ob.depth(), ob.oldest_age_ms() // 100 / 10, ob.drops,
                                    health)

    # ---- sampling ----------------------------------------------------------------------
    def sample(self):
        """Drain the FIFO; at a full window store its features (and a wave block if due).

        The hot path: allocates nothing until the window is full (tests/hil/test_fw_app.py).
        The work at the end of a window is a method of its own because its lambdas close
        over locals, and a function with closures allocates their cells on every call.
        """
        if self.sleeping:
            return
        if self.filled == 0:
            self.window_t0 = self.clock.now()
        overruns = self.adxl.overruns
        got = self.adxl.drain(self.window, self.filled, self.window_n - self.filled)
        if self.adxl.overruns != overruns and self.filled:
            self._restart_window(got)
            return
        self.filled += got
        if self.filled >= self.window_n:
            self._close_window()

    def _restart_window(self, got):
        # The FIFO overran before this read: samples are missing between the window so far
        # and the `got` just read, so a window must not straddle the gap. As the Pi agent
        # does (edge_agent windowing), the partial window is discarded and counted, and the
        # new samples start the next one (moved to the front byte by byte: no allocation).
        self.windows_discarded += 1
        w = self.window
        src = self.filled * 6
        for i in range(got * 6):
            w[i] = w[src + i]
        self.filled = got
        self.window_t0 = self.clock.now()

    def _close_window(self):
        n = self.filled
        self.filled = 0
        rate = self.adxl.rate_hz
        f = self.features.window(self.window, n, rate, SCALE_G)
        tq0, t0 = self.window_t0
        rec = {"dt": 0, "len_ms": int(n * 1000 / rate), "rate_hz": rate, "n": n,
               "x": f["x"], "y": f["y"], "z": f["z"]}
        self.windows += 1
        self._store("features", 1, lambda seq, t, q: device.encode_features(
            self.dev, self.boot, seq, t0, tq0, [rec]))
        every = self.cfg["wave_every_s"]
        if self.capture_n or (every and time.ticks_diff(time.ticks_ms(), self.last_wave) >= every * 1000):
            self._wave(self.capture_n or self.cfg["wave_samples"], t0, tq0)

    def _wave(self, n, t0, tq):
        # The block goes to the outbox as header + the window's samples, written
        # straight from the window buffer: device.encode_wave would join them in RAM
        # (two transient copies of 6 n bytes, ~3 KB for 256 samples), which a
        # fragmented 100 KB heap cannot always find in one piece.
        n = min(n, self.window_n)
        self.capture_n = 0
        self.last_wave = time.ticks_ms()
        self._store("wave", 1, lambda seq, t, q: self.wave_head(seq, t0, tq, n),
                    memoryview(self.window)[:6 * n])

    def wave_head(self, seq, t0, tq, n):
        """The wire header (+ device id) of a 3-axis waveform block of n samples."""
        return device.wave_head(self.dev, self.boot, seq, t0, tq, self.adxl.rate_hz, SCALE_G,
                                self.adxl.range_g, 3, n)

    # ---- GPS ---------------------------------------------------------------------------
    def read_gps(self):
        """Feed waiting UART bytes to the parser; GPS time sets the clock; batch fixes."""
        data = self.uart.read(512)
        if not data:
            return
        self.gps.feed(data)
        while True:
            fx = self.gps.pop()
            if fx is None:
                break
            self.clock.from_gps(fx)
            self.fixes.append(fx)
        if len(self.fixes) >= _FIX_BATCH:
            self._store_fixes()

    def _store_fixes(self):
        fixes = self.fixes
        self.fixes = []
        tq, now = self.clock.now()
        t0 = fixes[0]["time_ms"] if tq != "none" and fixes[0]["time_ms"] else now
        out = []
        for fx in fixes:
            w = {"dt": (fx["time_ms"] - t0) if (tq != "none" and fx["time_ms"]) else 0,
                 "mode": fx["mode"], "lat_e7": fx["lat_e7"], "lon_e7": fx["lon_e7"]}
            for k in ("alt_mm", "speed_mmps", "track_cdeg", "sats"):
                if fx.get(k) is not None:
                    w[k] = fx[k]
            out.append(w)
        self._store("fix", len(out), lambda seq, t, q: device.encode_fixes(
            self.dev, self.boot, seq, t0, tq, out))

    # ---- network -----------------------------------------------------------------------
    def network(self):
        """Keep Wi-Fi, MQTT and the clock up; send some records; handle acks/commands."""
        if self.wifi is not None and not self.wifi.ensure():
            return
        link = self.link
        if not link.connected:
            if not link.due():
                return
            if link.connect(self.status("offline"), self.status("online")):
                print("mqtt: connected (boot %d)" % self.boot)
                self.outbox.rewind()  # everything unconfirmed goes again
            else:
                return
        q, _ = self.clock.now()
        if (q in ("none", "rtc") and (self.last_ntp is None or
                                      time.ticks_diff(time.ticks_ms(), self.last_ntp) > _NTP_EVERY_MS)):
            self.last_ntp = time.ticks_ms()
            if self.cfg.get("ntp_host"):
                self.clock.sync_ntp(self.cfg["ntp_host"], retries=2, timeout_s=1)
        for _ in range(_SEND_PER_STEP):
            rec = self.outbox.next_to_send()
            if rec is None:
                break
            kind, boot, seq, n, payload = rec
            if not link.publish(kind, payload):
                return
        if time.ticks_diff(time.ticks_ms(), self.status_at) >= 0:
            # the retained status, refreshed (the birth at a connect may come just before)
            self.status_at = time.ticks_add(time.ticks_ms(), self.cfg["status_every_s"] * 1000)
            if not link.publish("status", self.status("online"), True):
                return
        link.poll()
        while link.inbox:
            m = link.inbox.pop(0)
            if m["kind"] == "ack":
                self.outbox.confirm(m["ranges"])
            elif m["kind"] == "cmd":
                self.command(m)

    def command(self, m):
        """Answer one command from the inbox with exactly one result record (kind 'result').

        The code that checks and runs commands (commands.py) is loaded for each one and
        dropped again: commands are rare, and its ~2 KB are better left to the heap.
        Any exception, MemoryError too (loading it or running the command), becomes ok
        false with its text, and the board runs on. An id already answered is neither
        run nor answered again; a payload without a readable id and command name
        cannot be answered (uplink.Link has printed why).
        """
        cid = m["id"]
        name = m["cmd"]
        error = detail = None
        try:
            import commands
            cid, name, error = commands.check(m)   # whom to answer; why it must not run
            if error is None and cid not in self.answered:
                detail = commands.run(self, name, m["args"])
        except Exception as e:
            error = "%s: %s" % (type(e).__name__, e)
        sys.modules.pop("commands", None)
        if cid is None or cid in self.answered:
            return
        self.answered.append(cid)
        if len(self.answered) > _REMEMBERED:
            self.answered.pop(0)
        ok = error is None
        try:
            self._store("result", 1, lambda seq, t0, tq: device.encode_result(
                self.dev, self.boot, seq, t0, tq, cid, name, ok, detail, error))
        except MemoryError:
            return  # no heap even for its result: unanswered, but the board runs on
        if name == "reboot" and ok:
            self.network()  # try to get the result out first
            machine.reset()

    def _wake(self):
        self.sleeping = False
        self.sleep_until = None
        self.adxl.wake()
        self.filled = 0
        self.status_at = time.ticks_ms()  # the status says online now

    # ---- loop --------------------------------------------------------------------------
    def step(self):
        """One loop iteration (a few ms)."""
        self.wdt.feed()
        if self.sleep_until is not None and time.ticks_diff(time.ticks_ms(), self.sleep_until) >= 0:
            self._wake()
        self.sample()
        self.read_gps()
        self.network()
        if not self.healthy and time.ticks_diff(time.ticks_ms(), self.started) > _HEALTHY_AFTER_MS:
            # the crash-loop guard is needed once: imported for it, then dropped (~1 KB)
            try:
                import safemode
                safemode.healthy()
                self.healthy = True
            except MemoryError:
                pass  # tried again at the next step
            sys.modules.pop("safemode", None)
        # Collect every step (36 us for a 100 KB heap on the Unix port): the allocator
        # then refills the lowest holes first and the free space stays in one piece
        # at the top of the heap, where a waveform block (~1.6 KB of transient copies)
        # still finds room. Without it, objects that live for a
        # while (fixes, records in flight) end up spread over the free space and a 100 KB
        # heap fails those allocations even with 15 KB free.
        gc.collect()

    def run(self, duration_ms=None):
        """Loop forever (or for duration_ms); sleeps briefly when the FIFO is far from full."""
        t0 = time.ticks_ms()
        while duration_ms is None or time.ticks_diff(time.ticks_ms(), t0) < duration_ms:
            self.step()
            time.sleep_ms(5)


def main(config_path="config.json", data_dir="", room=None):
    """Board entry point (main.py): config, Wi-Fi, then the loop forever.

    Paths are relative to the current directory: "/" on a board after reset, the
    state directory on a simulated board (tools/sim_board.py).
    """
    import config as configmod
    try:
        cfg = configmod.load(config_path)
    except configmod.ConfigError:
        print("config invalid: not starting (fix it with mpremote, then reset)")
        return
    # the schema is only needed at boot: give its ~9 KB back to the heap
    del configmod
    del sys.modules["config"]
    gc.collect()
    wifi = None
    try:
        import network  # noqa: F401
        from wifi import WiFi
        wifi = WiFi(cfg["wifi_ssid"], cfg["wifi_password"])
    except ImportError:
        pass
    try:
        app = App(cfg, data_dir, wifi, room)
    except ADXL345Error as e:
        # a wiring fault: say what is wrong, then reset; after a few such boots the
        # crash-loop guard (safemode.py) keeps the application off and the REPL free
        print("adxl345: %s; check SDA pin %d, SCL pin %d, 3V3, GND and SDO/ALT ADDRESS "
              "low (hardware/README.md). Resetting." % (e, cfg["i2c_sda"], cfg["i2c_scl"]))
        machine.reset()
    print("fieldwatch %s: device %s boot %d" % (FW_VERSION, app.dev, app.boot))
    try:
        app.run()
    except KeyboardInterrupt:
        app.link.close(app.status("offline"))
    except Exception as e:
        sys.print_exception(e)
        raise
