"""The edge agent: wires the steps together and runs the main loop.

A reading's way through the agent, one module per step:

  accel.py      the ADXL345 (Adafruit driver; real I2C or the simulated chip) behind
                AccelerometerInterface: FIFO counts, their scale to g, controls;
  sampler.py    the sampler thread reads the FIFO every poll interval, queues Chunks;
  windowing.py  chunks of counts -> windows of features.window_ms, overruns marked;
  features.py   a window in g -> a `features` record body (rms, peak, crest, dom_hz, bands);
  capture.py    waveform blocks (`wave` records) cut from the same chunks;
  outbox.py     every record is stored (SQLite) and keyed (keys.py) before it is sent;
  sending.py    outbox -> uplink, backlog paced; confirmations back; `log` records shipped;
  uplink.py     the MQTT connection (paho), its reconnects and its window of publishes;
  commands.py   cmd topic -> validation -> the command's handler -> a `result` record;
  status.py     the retained status message and its health figures;
  clock.py      record timestamps and their time quality; gps.py fixes from gpsd;
  indicator.py  status LED and event button.

Threads:
  sampler   reads the FIFO (a 32-sample FIFO lasts 40 ms at 800 Hz; the main loop may
            block longer than that in an fsync, so reading has a thread of its own);
  uplink    paho's network traffic and our reconnect loop (edge_agent.uplink);
  gps       keeps gpsd connected and completes fixes (edge_agent.gps);
  main      everything else, and the only user of the outbox (SQLite): each pass of
            _tick() turns the queued chunks into windows and waveform blocks, applies
            confirmations, runs commands, stores readings and fixes, publishes
            batches and status, and sets the LED.

Policy kept here, in one place each: a window cut short by an overrun is discarded
(counted in health windows_discarded, _store_windows); a chunk read before the sensor
was reconfigured (an older sampler epoch) is dropped (_take_chunk).
"""

import logging
import queue
import threading
import time

from edge_agent import features
from edge_agent import gps as gps_mod
from edge_agent import indicator as indicator_mod
from edge_agent.capture import WaveCapture
from edge_agent.clock import Clock
from edge_agent.commands import Commands
from edge_agent.outbox import OutboxError
from edge_agent.sampler import Sampler, poll_interval_s
from edge_agent.sending import LogShipper, Sender
from edge_agent.status import AGENT_COUNTERS, Status
from edge_agent.windowing import Windowing

log = logging.getLogger("edge_agent.agent")

CPU_TEMP_PATH = "/sys/class/thermal/thermal_zone0/temp"
_FROM_CONFIG = object()   # Agent(gps=..., indicator=...) default: build from the configuration


class Agent:
    """The running agent: create, then run() until stop() (or a signal handler calling it)."""

    def __init__(self, conf, accel, outbox, keys, uplink_factory, reset_reason="unknown",
                 gps=_FROM_CONFIG, indicator=_FROM_CONFIG):
        """accel: an opened accel.AccelerometerInterface; uplink_factory(status_payload, on_ack, on_command) -> Uplink.

        gps (a gps.GpsReader) and indicator (an indicator.Indicator) are built from the
        [gps] and [indicator] sections unless given; None leaves them out.
        """
        self.conf, self.dev = conf, conf["device"]["id"]
        self.accel, self.outbox, self.keys = accel, outbox, keys
        self.clock = Clock(conf["device"]["time_quality"])
        self.exit_action = None          # 'reboot' when a reboot command asked for a restart
        self.counters = dict.fromkeys(AGENT_COUNTERS, 0)    # status health figures, counted by every part
        self.sleeping = False
        self.wake_at = None              # monotonic time a timed sleep ends
        self.capture = None              # the WaveCapture under way
        self._stop = threading.Event()
        self.status = Status(self, reset_reason)
        self.commands = Commands(self)
        acks = queue.SimpleQueue()
        self.uplink = uplink_factory(self.status.payload, acks.put, self.commands.receive)
        self.sender = Sender(self.dev, outbox, self.uplink, acks, conf["outbox"], self.counters)
        self.ship_log = LogShipper(conf["logs"], self.clock, self.enqueue, self.counters, log)
        self.sampler = Sampler(accel, threading.Lock(), poll_interval_s(accel.rate_hz, conf["sensor"]["poll_ms"]))
        self.reset_stream()
        self.gps = gps_mod.from_config(conf) if gps is _FROM_CONFIG else gps
        self.fixes = (gps_mod.FixRecorder(self.gps, conf["gps"]["interval_s"], self.clock, self.counters)
                      if self.gps is not None else None)
        self.indicator = indicator_mod.from_config(conf) if indicator is _FROM_CONFIG else indicator

    # ---- public ---------------------------------------------------------------------------
    def stop(self):
        """Ask run() to finish: stop sampling, drain for exit_drain_s, disconnect, return."""
        self._stop.set()

    def heartbeat(self):
        """Called after every healthy pass of the main loop (cli.py points it at the systemd watchdog ping)."""

    def run(self):
        """The main loop; returns when stopped, after the shutdown drain."""
        self.sampler.start()
        self.uplink.start()
        self.ship_log("info", "edge agent %s started: boot %d, reset %s, outbox holds %d records"
                      % (self.status.version, self.keys.boot, self.status.reset_reason, self.outbox.depth()))
        now = time.monotonic()
        rint, every = self.conf["status"]["readings_interval_s"], self.conf["wave"]["every_s"]
        schedule = (now + self.conf["status"]["interval_s"], now + min(5.0, rint) if rint else None,
                    now + every if every else None)
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    schedule = self._tick(*schedule)
                    failures = 0
                    self.heartbeat()
                except Exception:
                    # A bug must not stop the measurements for good; a persistent one ends the process
                    # (and its supervisor restarts it, a new boot).
                    failures += 1
                    self.counters["loop_errors"] += 1
                    log.exception("main loop error (%d in a row)", failures)
                    if failures >= 50:
                        raise
                    time.sleep(0.2)
        finally:
            self._shutdown()

    def _tick(self, next_status, next_reading, next_wave):
        # One pass of the main loop; returns the updated schedule.
        self._take_samples(timeout=0.02)
        now = time.monotonic()
        self.sender.apply_acks()
        self.commands.run_pending()
        if self.wake_at is not None and now >= self.wake_at:
            self.commands.wake_sensor("sleep time over")
        if next_wave is not None and now >= next_wave:
            next_wave = now + self.conf["wave"]["every_s"]
            if not self.sleeping and self.capture is None:
                self.start_capture(self.conf["wave"]["samples"], None)
        if next_reading is not None and now >= next_reading:
            next_reading = now + self.conf["status"]["readings_interval_s"]
            self._read_board()
        self.status.snapshot()
        self.sender.drain()
        if now >= next_status:
            next_status = now + self.conf["status"]["interval_s"]
            self.publish_status()
        self._poll_gps()
        self._indicate()
        return next_status, next_reading, next_wave

    def publish_status(self):
        """Publish the retained status message now (state online, or sleeping)."""
        self.status.publish(self.uplink)

    def enqueue(self, kind, items):
        """Store records of one kind in the outbox: their keys, or [] (counted, logged) if they could not be."""
        try:
            ks = self.outbox.append(kind, items)
        except (OutboxError, OSError) as e:
            self.counters["enqueue_errors"] += 1
            log.error("could not store %d %s records: %s", len(items), kind, e)
            return []
        log.debug("stored %s %d:%d-%d", kind, ks[0][0], ks[0][1], ks[-1][1])
        return ks

    # ---- samples -> windows, waveform blocks ------------------------------------------------
    def reset_stream(self):
        """Start windows afresh at the sensor's current rate (after start, a rate/range change, sleep, wake)."""
        self.sampler.poll_s = poll_s = poll_interval_s(self.accel.rate_hz, self.conf["sensor"]["poll_ms"])
        self.windowing = Windowing(float(self.accel.rate_hz), self.conf["features"]["window_ms"],
                                   snap_s=max(0.05, 3 * poll_s))
        self.edges = features.band_edges(self.windowing.rate_hz, self.conf["features"]["band_hz"])

    def _take_samples(self, timeout):
        # Every chunk the sampler queued (waiting up to timeout s for the first) -> records.
        windows = []
        try:
            chunk = self.sampler.chunks.get(timeout=timeout)
            while True:
                windows += self._take_chunk(chunk)
                chunk = self.sampler.chunks.get_nowait()
        except queue.Empty:
            pass
        self._store_windows(windows)

    def _take_chunk(self, chunk):
        # One sampler Chunk into windowing and the capture under way; returns the windows it completed.
        if chunk.epoch != self.sampler.epoch or self.sleeping:
            return []                       # read before the sensor was reconfigured, or slept
        first_t, windows = self.windowing.add(chunk.counts, chunk.t_read, chunk.overrun)
        if self.capture is not None:
            if chunk.overrun or chunk.counts is None:
                self.capture.restart()      # samples were lost: a block is contiguous
            if first_t is not None and self.capture.feed(chunk.counts, first_t):
                self._store_capture()
        return windows

    def _store_windows(self, windows):
        # The policy: a window cut short by an overrun is discarded, the others become records.
        records = []
        for w in windows:
            if w.overrun:
                self.counters["windows_discarded"] += 1
                continue
            ms, tq = self.clock.stamp(w.t0)
            records.append((ms, tq, features.window_record(self.accel.samples_g(w.counts), self.windowing.rate_hz,
                                                           self.edges, remove_dc=self.conf["features"]["remove_dc"])))
        if records:
            self.enqueue("features", records)
            self.counters["windows"] += len(records)

    def start_capture(self, n, cmd):
        """Capture the next n samples per axis as a `wave` record; cmd: the capture command's id to answer, or None."""
        self.capture = WaveCapture(n, cmd, self.windowing.rate_hz, float(self.accel.scale_g), int(self.accel.range_g))

    def _store_capture(self):
        c, self.capture = self.capture, None
        ms, tq = self.clock.stamp(c.t0)
        ks = self.enqueue("wave", [(ms, tq, c.encoder(self.dev, ms, tq))])
        if ks:
            self.counters["waves"] += 1
        if c.cmd is not None:
            self.commands.capture_stored(c.cmd, ks, c.n)

    # ---- readings, GPS, LED ------------------------------------------------------------------
    def _read_board(self):
        # Readings are what the board really measures; a Raspberry Pi has a CPU temperature sensor.
        try:
            with open(CPU_TEMP_PATH) as f:
                milli = int(f.read().strip())
        except (OSError, ValueError):
            return
        ms, tq = self.clock.stamp(time.monotonic())
        if self.enqueue("readings", [(ms, tq, ["cpu_temp_c", milli / 1000.0])]):
            self.counters["readings"] += 1

    def _poll_gps(self):
        # Every gps.interval_s, the newest fix gpsd completed since the last one becomes a `fix` record.
        fix = self.fixes.due(until=self._stop) if self.fixes is not None else None
        if fix is not None and self.enqueue("fix", [fix]):
            self.counters["gps_fixes"] += 1

    def _indicate(self):
        # Status LED: error (something failed lately), else online / offline; button presses -> readings.
        if self.indicator is None:
            return
        self.indicator.follow(self.counters["enqueue_errors"] + self.counters["loop_errors"]
                              + self.sampler.read_errors + self.accel.i2c_errors, self.uplink.connected)
        for t in self.indicator.presses():
            self.counters["button_presses"] += 1
            n = self.counters["button_presses"]
            ms, tq = self.clock.stamp(t)
            if self.enqueue("readings", [(ms, tq, ["button_press", n])]):
                self.counters["readings"] += 1
            log.info("button pressed (%d since start)", n)
            if self.conf["indicator"]["capture_on_press"] and not self.sleeping and self.capture is None:
                self.start_capture(self.conf["wave"]["samples"], None)

    # ---- shutdown ------------------------------------------------------------------------------
    def _shutdown(self):
        self.sampler.stop()
        if self.windowing.pending:
            self.counters["windows_discarded"] += 1  # a partial window is not a window
        self.sender.drain_before_exit(self.conf["outbox"]["exit_drain_s"])
        self.status.snapshot()
        if self.outbox.depth():
            log.info("stopping with %d records in the outbox; they are sent after the next start",
                     self.outbox.depth())
        self.uplink.stop("offline")
        self.sender.apply_acks()
        try:
            self.sampler.close_sensor()
        except Exception as e:
            log.warning("closing the accelerometer: %s", e)
        if self.indicator is not None:
            self.indicator.close()       # the LED goes off, the pins are released
