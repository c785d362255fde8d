"""The edge agent's main loop: samples -> windows -> features -> outbox -> uplink -> confirmations.

Threads:
  sampler   reads the accelerometer FIFO every poll interval and queues the raw
            counts (a FIFO of 32 samples lasts 40 ms at 800 Hz; the main loop may
            block longer than that in an fsync, so reading has a thread of its own);
  uplink    paho's network traffic and our reconnect loop (edge_agent.uplink);
  main      everything else, and the only user of the outbox (SQLite): builds
            windows and waveform blocks, enqueues records, applies confirmations,
            runs commands, publishes batches and status.

Sending: live records (made since the connection came up) go first, as fast as
the un-acknowledged-publish cap allows; backlog (records of earlier boots, made
while offline, or unconfirmed for too long) follows at outbox.backlog_records_per_s.
After a reconnect every unconfirmed record is sent again (after ack_settle_s, so
confirmations the broker queued for us arrive first and spare the resend).

Commands (cmd topic) are validated with wire.codec.decode and answered with a
`result` record through the outbox; a command that cannot even be answered (no
usable id, unknown name) is reported as a `log` record instead. Nothing a
command says can crash the agent.

GPS (edge_agent.gps): a reader thread keeps gpsd connected and completes fixes;
_poll_gps() stores the newest one every gps.interval_s as a `fix` record, stamped
with the receiver's time (tq gps) when that is plausible. Status LED and button
(edge_agent.indicator): _indicate() shows online / offline / error and stores each
button press as a `button_press` reading (and a waveform capture, if configured).
"""

import ctypes
import ctypes.util
import json
import logging
import queue
import threading
import time

import numpy as np

from edge_agent import features
from edge_agent import gps as gps_mod
from edge_agent import indicator as indicator_mod
from edge_agent.outbox import OutboxError
from edge_agent.ratelimit import TokenBucket
from fieldwatch import __version__
from fieldwatch.wire import codec, topics

log = logging.getLogger("edge_agent.agent")

CLEAN_EXIT_FILE = "clean_exit"
CPU_TEMP_PATH = "/sys/class/thermal/thermal_zone0/temp"
MAX_HEALTH = 32
REMEMBERED_COMMANDS = 64


# ---- time --------------------------------------------------------------------------

class _Timex(ctypes.Structure):
    # struct timex (linux/timex.h), enough of it for adjtimex(2) with modes = 0; padded generously.
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("pad", ctypes.c_byte * 256)]


_STA_UNSYNC = 0x0040
_TIME_ERROR = 5


def kernel_clock_synchronised():
    """True/False from adjtimex(2) (is NTP discipline on?), None when it cannot be asked."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return None
    if state < 0:
        return None
    return state != _TIME_ERROR and not tx.status & _STA_UNSYNC


class Clock:
    """Record timestamps (ms) and their time quality, per the wire contract's `tq`."""

    def __init__(self, mode="auto"):
        self.mode = mode
        self._mono0 = time.monotonic()
        self._tq = self._ask_kernel() if mode == "auto" else mode
        self._checked = self._mono0

    @staticmethod
    def _ask_kernel():
        if time.time() * 1000 < codec.MIN_TS_MS:
            return "none"   # never set (a Pi without RTC before NTP): ms since start instead
        return "ntp" if kernel_clock_synchronised() else "rtc"

    def tq(self):
        """Current time quality: the configured one, or (auto) ntp / rtc / none, re-checked each minute."""
        if self.mode != "auto":
            return self.mode
        now = time.monotonic()
        if now - self._checked > 60:   # (two threads may both ask: harmless)
            self._tq = self._ask_kernel()
            self._checked = now
        return self._tq

    def stamp(self, mono):
        """(ms, tq) for the moment `mono` (time.monotonic()): epoch ms, or ms since start when tq is none."""
        tq = self.tq()
        if tq == "none":
            return max(0, int(round((mono - self._mono0) * 1000))), tq
        return int(round((time.time() - (time.monotonic() - mono)) * 1000)), tq


# ---- sampling ------------------------------------------------------------------------

class Sampler(threading.Thread):
    """Reads the FIFO every poll interval; queues (monotonic read time, counts (n,3) int16, overrun, epoch).

    `epoch` is bumped (under the accelerometer lock) whenever the sensor is reconfigured,
    so samples read before a rate or range change are never mixed with later ones.
    """

    def __init__(self, accel, lock, poll_s):
        super().__init__(name="sampler", daemon=True)
        self.accel = accel
        self.lock = lock
        self.poll_s = poll_s
        self.chunks = queue.SimpleQueue()
        self.paused = threading.Event()
        self.read_errors = 0
        self.epoch = 0
        self._halt = threading.Event()

    def stop(self):
        """End the thread (after its current read)."""
        self._halt.set()
        self.join(5)

    def run(self):
        # Start with an empty FIFO: what queued up since open() (the agent's start-up takes longer
        # than a FIFO lasts at high rates) would show as an overrun that loses nothing of ours.
        flush = getattr(self.accel, "flush", None)
        if flush is not None:
            try:
                with self.lock:
                    flush()
            except Exception as e:  # I2C trouble: the first read will say so
                log.warning("could not empty the FIFO before sampling: %s", e)
        next_t = time.monotonic()
        while not self._halt.is_set():
            if not self.paused.is_set():
                try:
                    with self.lock:
                        counts, overrun = self.accel.read_fifo()
                        t = time.monotonic()
                        epoch = self.epoch
                        # read_fifo returns a view of a buffer the next read reuses: copy it.
                        counts = np.array(counts, dtype=np.int16).reshape(-1, 3)
                    if len(counts) or overrun:
                        self.chunks.put((t, counts, bool(overrun), epoch))
                except Exception as e:  # I2C trouble: counted by the driver; keep sampling
                    self.read_errors += 1
                    if self.read_errors in (1, 10, 100) or self.read_errors % 1000 == 0:
                        log.warning("FIFO read failed (%d so far): %s", self.read_errors, e)
                    self.chunks.put((time.monotonic(), None, True, self.epoch))
            next_t += self.poll_s
            delay = next_t - time.monotonic()
            if delay < -self.poll_s:   # fell behind (a long stall): do not try to catch up
                next_t = time.monotonic()
                delay = 0
            self._halt.wait(max(0.0, delay))


# ---- the agent ------------------------------------------------------------------------

_FROM_CONFIG = object()   # Agent(gps=..., indicator=...) default: build from the configuration


class Agent:
    """The running agent: create, then run() until stop() (or a signal handler calling it)."""

    def __init__(self, conf, accel, outbox, keys, uplink_factory, reset_reason="unknown",
                 gps=_FROM_CONFIG, indicator=_FROM_CONFIG):
        """uplink_factory(status_payload, on_ack, on_command) -> an edge_agent.uplink.Uplink.

        gps (a gps.GpsReader) and indicator (an indicator.Indicator) are built from the
        [gps] and [indicator] sections unless given; None leaves them out.
        """
        self.conf = conf
        self.dev = conf["device"]["id"]
        self.accel = accel
        self.outbox = outbox
        self.keys = keys
        self.reset_reason = reset_reason
        self.clock = Clock(conf["device"]["time_quality"])
        self._accel_lock = threading.Lock()
        self._acks = queue.SimpleQueue()
        self._cmds = queue.SimpleQueue()
        self._stop = threading.Event()
        self.exit_action = None          # 'reboot' when a reboot command asked for a restart
        self.counters = {"windows": 0, "windows_discarded": 0, "waves": 0, "readings": 0, "cmds": 0,
                         "cmd_errors": 0, "enqueue_errors": 0, "loop_errors": 0, "batches_sent": 0, "records_sent": 0,
                         "records_confirmed": 0, "logs_suppressed": 0}
        self.sleeping = False
        self._wake_at = None
        self._snapshot = {"depth": outbox.depth(), "oldest_s": 0.0, "drops": 0, "health": {}}
        self.uplink = uplink_factory(self._status_payload, self._acks.put,
                                     lambda payload, retained: self._cmds.put((payload, retained)))
        self._generation = 0
        self._backlog_hold_until = 0.0
        self._tokens = 0.0
        self._tokens_t = time.monotonic()
        self._flush_until = 0.0
        self._recent_cmds = {}            # id -> result body, for redelivered commands
        self._capture = None              # waveform capture under way
        self._log_bucket = TokenBucket(conf["logs"]["ship_per_s"], conf["logs"]["ship_burst"])
        self._logs_held = 0               # log records not shipped since the last one that was
        self._reset_stream()
        self.sampler = Sampler(accel, self._accel_lock, self._poll_s())
        # GPS and status LED / button (see _poll_gps, _indicate).
        self.gps = gps_mod.from_config(conf) if gps is _FROM_CONFIG else gps
        self.indicator = indicator_mod.from_config(conf) if indicator is _FROM_CONFIG else indicator
        self.counters.update(gps_fixes=0, gps_connects=0, gps_connect_failures=0, button_presses=0)
        self._next_fix = 0.0
        self._gps_time_warned = False
        self._error_count = 0
        self._error_until = 0.0

    # ---- public -----------------------------------------------------------------------
    def stop(self):
        """Ask run() to finish: stop sampling, drain for exit_drain_s, disconnect, return."""
        self._stop.set()

    def heartbeat(self):
        """Called after every healthy pass of the main loop (cli.py points it at the systemd watchdog ping)."""

    def run(self):
        """The main loop; returns when stopped, after the shutdown drain."""
        self.sampler.start()
        self.uplink.start()
        self._log("info", "edge agent %s started: boot %d, reset %s, outbox holds %d records"
                  % (__version__, self.keys.boot, self.reset_reason, self.outbox.depth()))
        now = time.monotonic()
        next_status = now + self.conf["status"]["interval_s"]
        rint = self.conf["status"]["readings_interval_s"]
        next_reading = now + min(5.0, rint) if rint else None
        next_wave = now + self.conf["wave"]["every_s"] if self.conf["wave"]["every_s"] else None
        failures = 0
        try:
            while not self._stop.is_set():
                try:
                    next_status, next_reading, next_wave = self._tick(next_status, next_reading, next_wave)
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
        self._apply_acks()
        self._run_commands()
        if self._wake_at is not None and now >= self._wake_at:
            self._wake("sleep time over")
        if next_wave is not None and now >= next_wave:
            next_wave = now + self.conf["wave"]["every_s"]
            if not self.sleeping and self._capture is None:
                self._start_capture(self.conf["wave"]["samples"], None)
        if next_reading is not None and now >= next_reading:
            next_reading = now + self.conf["status"]["readings_interval_s"]
            self._read_board()
        self._snapshot_health()
        self._drain()
        if now >= next_status:
            next_status = now + self.conf["status"]["interval_s"]
            self._publish_status()
        self._poll_gps()
        self._indicate()
        return next_status, next_reading, next_wave

    # ---- status -------------------------------------------------------------------------
    def _status_payload(self, state):
        # Called from the uplink thread too: uses only the snapshot and plain attributes.
        if state == "online" and self.sleeping:
            state = "sleeping"
        boot, seq = self.keys.next_key
        ms, tq = self.clock.stamp(time.monotonic())
        s = self._snapshot
        return codec.encode_status(self.dev, boot, seq, ms, tq, state, __version__[:32], self.conf["device"]["hw"],
                                   self.reset_reason, min(s["depth"], codec.MAX_U32), round(s["oldest_s"], 1),
                                   min(s["drops"], codec.MAX_U32), s["health"])

    def _snapshot_health(self):
        ob, up = self.outbox, self.uplink.counters
        health = {
            "fifo_overruns": _count(getattr(self.accel, "overruns", 0)),
            "i2c_errors": _count(getattr(self.accel, "i2c_errors", 0)) + self.sampler.read_errors,
            "drops_total": ob.drops,
            "resends": ob.resends,
            "records_enqueued": ob.appended,
            "reconnects": max(0, up["connects"] - 1),
            "connect_failures": up["connect_failures"],
            "publish_rejected": up["publish_rejected"],
            "acks_invalid": up["acks_invalid"],
            "link_errors": up["link_errors"],
        }
        health.update(self.counters)
        self._snapshot = {"depth": ob.depth(), "oldest_s": ob.oldest_age_s(), "drops": ob.drops_since_open,
                          "health": dict(list(health.items())[:MAX_HEALTH])}

    def _publish_status(self):
        self.uplink.publish(topics.topic(self.dev, "status"), self._status_payload("online"), retain=True)

    # ---- samples -> windows, waveform blocks -----------------------------------------------
    def _poll_s(self):
        rate = float(getattr(self.accel, "rate_hz", self.conf["sensor"]["rate_hz"]))
        # Read when the FIFO is half full, and never slower than configured: the other half
        # (10 ms at 1600 Hz) is the room for a late wake-up. At 60 % (12 ms at 1600 Hz) a
        # loaded 2-core machine overran 3-29 times in 20 s, at 50 % twice (docs/agent.md).
        return min(self.conf["sensor"]["poll_ms"] / 1000.0, 0.5 * 32 / rate)

    def _reset_stream(self):
        # After start, an overrun, a rate/range change or sleep: windows start afresh.
        self.rate_hz = float(getattr(self.accel, "rate_hz", self.conf["sensor"]["rate_hz"]))
        self.scale_g = float(getattr(self.accel, "scale_g", 0.0039))
        self.window_n = max(1, int(round(self.rate_hz * self.conf["features"]["window_ms"] / 1000.0)))
        self.edges = features.band_edges(self.rate_hz, self.conf["features"]["band_hz"])
        self._buf = []
        self._buf_n = 0
        self._buf_t = None               # monotonic time of the first buffered sample
        self._next_t = None              # monotonic time expected for the next sample

    def _take_samples(self, timeout):
        windows = []
        try:
            item = self.sampler.chunks.get(timeout=timeout)
        except queue.Empty:
            return
        while item is not None:
            self._add_chunk(*item, windows=windows)
            try:
                item = self.sampler.chunks.get_nowait()
            except queue.Empty:
                item = None
        if windows:
            self._enqueue("features", windows)
            self.counters["windows"] += len(windows)

    def _add_chunk(self, t_read, counts, overrun, epoch, windows):
        if epoch != self.sampler.epoch:
            return                      # read before the sensor was reconfigured
        if counts is None or overrun:
            # Samples were lost (FIFO overrun or a failed read): a window must not straddle the gap.
            if self._buf_n:
                self.counters["windows_discarded"] += 1
            self._buf, self._buf_n, self._buf_t, self._next_t = [], 0, None, None
            if self._capture is not None:
                self._capture["chunks"], self._capture["have"], self._capture["t"] = [], 0, None
            if counts is None or not len(counts):
                return
        n = len(counts)
        period = 1.0 / self.rate_hz
        first_t = t_read - (n - 1) * period
        if self._next_t is not None and abs(self._next_t - first_t) < max(0.05, 3 * self.sampler.poll_s):
            first_t = self._next_t      # keep the sample clock continuous; re-anchor on drift
        self._next_t = first_t + n * period
        if self.sleeping:
            return
        counts = np.asarray(counts, dtype=np.int16).reshape(n, 3)
        if self._capture is not None:
            self._feed_capture(counts, first_t)
        if self._buf_t is None:
            self._buf_t = first_t
        self._buf.append(counts)
        self._buf_n += n
        while self._buf_n >= self.window_n:
            block = np.concatenate(self._buf) if len(self._buf) > 1 else self._buf[0]
            win, rest = block[:self.window_n], block[self.window_n:]
            ms, tq = self.clock.stamp(self._buf_t)
            body = features.window_record(win.astype(np.float64) * self.scale_g, self.rate_hz, self.edges,
                                          remove_dc=self.conf["features"]["remove_dc"])
            windows.append((ms, tq, body))
            self._buf_t += self.window_n * period
            self._buf = [rest] if len(rest) else []
            self._buf_n = len(rest)

    def _start_capture(self, n, cmd):
        self._capture = {"n": n, "cmd": cmd, "chunks": [], "have": 0, "t": None,
                         "rate": self.rate_hz, "scale": self.scale_g, "range": int(getattr(self.accel, "range_g", 0))}

    def _feed_capture(self, counts, first_t):
        c = self._capture
        if c["t"] is None:
            c["t"] = first_t
        take = counts[:c["n"] - c["have"]]
        c["chunks"].append(take)
        c["have"] += len(take)
        if c["have"] < c["n"]:
            return
        self._capture = None
        block = np.ascontiguousarray(np.concatenate(c["chunks"]), dtype="<i2")
        ms, tq = self.clock.stamp(c["t"])
        dev, n = self.dev, c["n"]
        range_g = c["range"] if c["range"] in codec.ADXL_RANGES_G else 0

        def encode(boot, seq):
            return codec.encode_wave(dev, boot, seq, ms, tq, c["rate"], c["scale"], range_g, 3, n, block.tobytes())

        ks = self._enqueue("wave", [(ms, tq, encode)])
        if ks:
            self.counters["waves"] += 1
        if c["cmd"] is not None:
            cid = c["cmd"]
            if ks:
                self._answer(cid, "capture", True, {"seq": ks[0][1], "boot": ks[0][0], "n": n})
            else:
                self._answer(cid, "capture", False, error="the waveform block could not be stored")

    def _read_board(self):
        # Readings are what the board really measures; a Raspberry Pi has a CPU temperature sensor.
        try:
            with open(CPU_TEMP_PATH) as f:
                milli = int(f.read().strip())
        except (OSError, ValueError):
            return
        ms, tq = self.clock.stamp(time.monotonic())
        if self._enqueue("readings", [(ms, tq, ["cpu_temp_c", milli / 1000.0])]):
            self.counters["readings"] += 1

    # ---- outbox in and out -------------------------------------------------------------------
    def _enqueue(self, kind, items):
        try:
            ks = self.outbox.append(kind, items)
        except (OutboxError, OSError) as e:
            self.counters["enqueue_errors"] += 1
            log.error("could not store %d %s records: %s", len(items), kind, e)
            return []
        log.debug("stored %s %d:%d-%d", kind, ks[0][0], ks[0][1], ks[-1][1])
        return ks

    def _log(self, level, text):
        # Logged locally always; shipped as a `log` record at most logs.ship_per_s on average
        # (a flood of bad commands must not flood the outbox). What is held back is counted,
        # and the next shipped record is preceded by one saying how many were.
        log.log(getattr(logging, level.upper(), logging.INFO), "%s", text)
        if not self._log_bucket.take():
            self._logs_held += 1
            self.counters["logs_suppressed"] += 1
            return
        ms, tq = self.clock.stamp(time.monotonic())
        items = []
        if self._logs_held:
            items.append((ms, tq, ["warning", "%d log messages not shipped (over logs.ship_per_s %g/s, burst %d)"
                                   % (self._logs_held, self._log_bucket.rate, self._log_bucket.burst)]))
        items.append((ms, tq, [level, text[:codec.MAX_LOG_TEXT]]))
        if self._enqueue("log", items):
            self._logs_held = 0

    def _apply_acks(self):
        ranges = []
        while True:
            try:
                ranges.extend(self._acks.get_nowait())
            except queue.Empty:
                break
        if ranges:
            try:
                self.counters["records_confirmed"] += self.outbox.confirm(ranges)
            except OutboxError as e:
                log.error("could not apply a delivery confirmation: %s", e)  # resent later, harmless

    def _drain(self, pace=True):
        up, ob = self.uplink, self.outbox
        if up.generation != self._generation:
            # A new connection: whatever was in flight may be lost; resend all unconfirmed,
            # after giving confirmations queued by the broker a moment to arrive.
            self._generation = up.generation
            try:
                n = ob.rewind()
            except OutboxError as e:
                log.error("outbox: %s", e)
                n = 0
            self._backlog_hold_until = time.monotonic() + self.conf["outbox"]["ack_settle_s"]
            log.info("connection %d: outbox holds %d records (%d of them sent before, unconfirmed)",
                     up.generation, ob.depth(), n)
        now = time.monotonic()
        rate = self.conf["outbox"]["backlog_records_per_s"]
        burst = max(rate, float(self.conf["outbox"]["batch_records"]))
        self._tokens = min(burst, self._tokens + (now - self._tokens_t) * rate)
        self._tokens_t = now
        max_records = self.conf["outbox"]["batch_records"]
        while up.can_publish():
            unpaced = not pace or now < self._flush_until
            if now < self._backlog_hold_until and not unpaced:
                backlog = 0
            elif unpaced:
                backlog = None
            else:
                backlog = int(self._tokens)
            try:
                batch = ob.next_to_send(max_records=max_records, backlog_records=backlog)
            except OutboxError as e:
                log.error("outbox: %s", e)
                return
            if batch is None:
                if unpaced and now < self._flush_until:
                    self._flush_until = 0.0   # flush done: the backlog is out
                return
            # A segment's message is built within the contract's size limit (edge_agent.outbox).
            payload = batch.payload(self.dev)
            if not up.publish(topics.topic(self.dev, batch.kind), payload):
                return
            try:
                ob.mark_sent(batch)
            except OutboxError as e:
                log.error("outbox: %s", e)
            self.counters["batches_sent"] += 1
            self.counters["records_sent"] += len(batch)
            if not batch.live and backlog is not None:
                self._tokens -= len(batch)

    # ---- commands ----------------------------------------------------------------------
    def _run_commands(self):
        while True:
            try:
                payload, retained = self._cmds.get_nowait()
            except queue.Empty:
                return
            try:
                self._command(payload, retained)
            except Exception as e:  # a command must never take the agent down
                log.exception("command failed")
                cid, name = _cmd_identity(payload)
                if cid is not None:
                    self._answer(cid, name, False, error="internal error: %s" % _short(e))

    def _command(self, payload, retained):
        self.counters["cmds"] += 1
        topic_name = topics.topic(self.dev, "cmd")
        cid, name = _cmd_identity(payload)
        if retained:
            # A retained command would run again on every reconnect: refuse it.
            text = "retained command refused (commands must not be retained)"
            if cid is not None:
                self._answer(cid, name, False, error=text)
            else:
                self.counters["cmd_errors"] += 1
                self._log("warning", text)
            return
        try:
            cmd = codec.decode(topic_name, payload)
        except codec.WireError as e:
            if cid is not None:
                self._answer(cid, name, False, error="%s: %s" % (e.code, e.detail))
            else:
                # Without a usable id and command name no result can answer it: log it instead.
                self.counters["cmd_errors"] += 1
                self._log("warning", "command rejected: %s: %s" % (e.code, e.detail))
            return
        cid, name, args = cmd["id"], cmd["cmd"], cmd["args"]
        if cid in self._recent_cmds:
            # A redelivery: answer again, do not run it twice.
            ok, detail, error = self._recent_cmds[cid]
            self._answer(cid, name, ok, detail, error, remember=False)
            return
        handler = getattr(self, "_cmd_" + name)
        handler(cid, args)

    def _answer(self, cid, name, ok, detail=None, error=None, remember=True):
        body = {"id": cid, "cmd": name, "ok": bool(ok)}
        if detail is not None:
            body["detail"] = detail
        if not ok:
            if remember:
                self.counters["cmd_errors"] += 1
            body["error"] = (error or "failed")[:codec.MAX_LOG_TEXT]
        if remember:
            self._recent_cmds[cid] = (ok, detail, body.get("error"))
            while len(self._recent_cmds) > REMEMBERED_COMMANDS:
                self._recent_cmds.pop(next(iter(self._recent_cmds)))
        ms, tq = self.clock.stamp(time.monotonic())
        log.info("command %s %s: %s", name, cid, "ok" if ok else body["error"])
        return self._enqueue("result", [(ms, tq, body)])

    def _accel_call(self, what, *args):
        # Reconfigure the sensor between two FIFO reads; what was read before is discarded.
        with self._accel_lock:
            try:
                return getattr(self.accel, what)(*args)
            finally:
                self.sampler.epoch += 1

    def _abort_capture(self, why):
        c, self._capture = self._capture, None
        if c is not None and c["cmd"] is not None:
            self._answer(c["cmd"], "capture", False, error="capture interrupted: %s" % why)

    def _cmd_set_rate(self, cid, args):
        hz = args["hz"]
        try:
            self._accel_call("set_rate", hz)
        except (ValueError, OSError) as e:
            return self._answer(cid, "set_rate", False, error="set_rate %s Hz failed: %s" % (hz, _short(e)))
        self._abort_capture("the rate changed")
        self._reset_stream()
        self.sampler.poll_s = self._poll_s()
        self._answer(cid, "set_rate", True, {"hz": _plain(self.rate_hz)})

    def _cmd_set_range(self, cid, args):
        g = args["g"]
        try:
            self._accel_call("set_range", g)
        except (ValueError, OSError) as e:
            return self._answer(cid, "set_range", False, error="set_range %d g failed: %s" % (g, _short(e)))
        self._abort_capture("the range changed")
        self._reset_stream()
        self._answer(cid, "set_range", True, {"g": int(getattr(self.accel, "range_g", g))})

    def _cmd_sleep(self, cid, args):
        try:
            self._accel_call("sleep")
        except OSError as e:
            return self._answer(cid, "sleep", False, error="sleep failed: %s" % _short(e))
        self.sleeping = True
        self.sampler.paused.set()
        self._abort_capture("the sensor was put to sleep")
        self._reset_stream()
        self._wake_at = time.monotonic() + args["s"] if "s" in args else None
        self._answer(cid, "sleep", True, {"s": args["s"]} if "s" in args else None)
        self._publish_status()

    def _cmd_wake(self, cid, args):
        if not self.sleeping:
            return self._answer(cid, "wake", True, {"was_sleeping": False})
        err = self._wake("wake command")
        if err:
            return self._answer(cid, "wake", False, error=err)
        self._answer(cid, "wake", True, {"was_sleeping": True})

    def _wake(self, why):
        try:
            self._accel_call("wake")
        except OSError as e:
            return "wake failed: %s" % _short(e)
        self.sleeping = False
        self._wake_at = None
        self._reset_stream()
        self.sampler.paused.clear()
        log.info("measuring again (%s)", why)
        self._publish_status()
        return None

    def _cmd_capture(self, cid, args):
        if self.sleeping:
            return self._answer(cid, "capture", False, error="the sensor is asleep; send wake first")
        if self._capture is not None and self._capture["cmd"] is not None:
            return self._answer(cid, "capture", False, error="a capture is already under way")
        self._start_capture(args.get("n", self.conf["wave"]["samples"]), cid)  # answered when the block is stored

    def _cmd_flush(self, cid, args):
        self._flush_until = time.monotonic() + 300.0
        self._backlog_hold_until = 0.0
        self._answer(cid, "flush", True, {"depth": self.outbox.depth()})

    def _cmd_reboot(self, cid, args):
        # The agent restarts its own process (a new boot); the Pi itself is not rebooted.
        self._answer(cid, "reboot", True, {"restarting": "agent process"})
        self.exit_action = "reboot"
        self.stop()

    # ---- hooks for another issue -----------------------------------------------------------
    def _poll_gps(self):
        """Every gps.interval_s, store the newest fix gpsd completed since the last one as a `fix` record."""
        if self.gps is None:
            return
        if not self.gps.started:
            self.gps.start(until=self._stop)   # its own thread, ended by stop(); an absent gpsd is retried there
        now = time.monotonic()
        if now < self._next_fix:
            return
        self._next_fix = now + self.conf["gps"]["interval_s"]
        self.counters["gps_connects"] = self.gps.counters["gps_connects"]           # shown in status health
        self.counters["gps_connect_failures"] = self.gps.counters["gps_connect_failures"]
        fixes = self.gps.take()
        if not fixes:
            return                        # no gpsd, or no 2D/3D fix: nothing to store
        fix = fixes[-1]
        local_ms, local_tq = self.clock.stamp(fix.mono)
        ms, tq = gps_mod.choose_time(fix.gps_ms, local_ms, local_tq)
        if tq != "gps" and fix.gps_ms is not None and not self._gps_time_warned:
            self._gps_time_warned = True
            log.warning("GPS time %d ms is %.0f s away from our clock: fixes are stamped with our clock (tq %s)",
                        fix.gps_ms, (fix.gps_ms - local_ms) / 1000.0, local_tq)
        if self._enqueue("fix", [(ms, tq, fix.body)]):
            self.counters["gps_fixes"] += 1

    def _indicate(self):
        """Status LED: error (something failed lately), else online / offline; button presses -> readings."""
        if self.indicator is None:
            return
        now = time.monotonic()
        errors = (self.counters["enqueue_errors"] + self.counters["loop_errors"] + self.sampler.read_errors
                  + _count(getattr(self.accel, "i2c_errors", 0)))
        if errors != self._error_count:
            self._error_count = errors
            self._error_until = now + indicator_mod.ERROR_HOLD_S
        if now < self._error_until:
            self.indicator.show("error")
        else:
            self.indicator.show("online" if self.uplink.connected else "offline")
        for t in self.indicator.presses():
            self.counters["button_presses"] += 1
            n = self.counters["button_presses"]
            ms, tq = self.clock.stamp(t)
            if self._enqueue("readings", [(ms, tq, ["button_press", n])]):
                self.counters["readings"] += 1
            log.info("button pressed (%d since start)", n)
            if self.conf["indicator"]["capture_on_press"] and not self.sleeping and self._capture is None:
                self._start_capture(self.conf["wave"]["samples"], None)

    # ---- shutdown ------------------------------------------------------------------------
    def _shutdown(self):
        self.sampler.stop()
        if self._buf_n:
            self.counters["windows_discarded"] += 1  # a partial window is not a window
        end = time.monotonic() + self.conf["outbox"]["exit_drain_s"]
        self._flush_until = end  # send the backlog unpaced on the way out
        while time.monotonic() < end and self.outbox.depth() > 0 and self.uplink.connected:
            self._apply_acks()
            self._drain(pace=False)
            time.sleep(0.02)
        self._apply_acks()
        self._snapshot_health()
        if self.outbox.depth():
            log.info("stopping with %d records in the outbox; they are sent after the next start",
                     self.outbox.depth())
        self.uplink.stop("offline")
        self._apply_acks()
        try:
            with self._accel_lock:
                close = getattr(self.accel, "close", None)
                if close:
                    close()
        except Exception as e:
            log.warning("closing the accelerometer: %s", e)
        if self.indicator is not None:
            self.indicator.close()       # the LED goes off, the pins are released


def _cmd_identity(payload):
    # (id, cmd) of a command payload if a result can name them, else (None, None).
    try:
        msg = json.loads(payload)
    except (ValueError, UnicodeError, RecursionError):
        return None, None
    if not isinstance(msg, dict):
        return None, None
    cid, name = msg.get("id"), msg.get("cmd")
    if not isinstance(cid, str) or not 1 <= len(cid) <= codec.MAX_CMD_ID or any(
            ord(c) == 0 or 0xD800 <= ord(c) <= 0xDFFF for c in cid):
        return None, None
    if name not in codec.COMMANDS:
        return None, None
    return cid, name


def _count(x):
    try:
        return max(0, int(x))
    except (TypeError, ValueError):
        return 0


def _plain(v):
    v = float(v)
    return int(v) if v.is_integer() else v


def _short(e):
    text = str(e) or type(e).__name__
    return text[:300]
