"""Commands on the cmd topic: validation, a handler per command, and the answers (`result` records).

A command arrives as the raw payload the uplink received (docs/wire.md, "cmd").
check() decides what becomes of it, without side effects:

* retained: refused (a retained command would run again on every reconnect);
* not valid by fieldwatch.wire.codec.decode: refused with the codec's error code;
* valid: run by the handler of its name (set_rate, set_range, sleep, wake, capture,
  flush, reboot).

A refusal or a handler's outcome is answered with a `result` record through the
outbox; a payload without a usable id and command name cannot be answered and is
shipped as a `log` record instead (rate-limited, edge_agent.sending.LogShipper).
The answers to the last REMEMBERED_COMMANDS ids are kept: a redelivered command is
answered again, never run twice. Nothing a command says can crash the agent.
"""

import collections
import json
import logging
import queue
import time

from fieldwatch.wire import codec, topics

log = logging.getLogger("edge_agent.commands")

REMEMBERED_COMMANDS = 64

# What check() makes of a payload: action "run" (args: the decoded arguments), "refuse"
# (error: why, for the result) or "log" (no usable id: error is the text to log).
Checked = collections.namedtuple("Checked", "action cid name args error")


def command_identity(payload):
    """(id, cmd) of a command payload if a result can name them, else (None, None)."""
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


def check(dev, payload, retained):
    """What to do with a cmd payload (bytes) for device dev: a Checked (run, refuse or log)."""
    cid, name = command_identity(payload)
    if retained:
        text = "retained command refused (commands must not be retained)"
        return Checked("refuse", cid, name, None, text) if cid is not None else Checked("log", None, None, None, text)
    try:
        cmd = codec.decode(topics.topic(dev, "cmd"), payload)
    except codec.WireError as e:
        if cid is not None:
            return Checked("refuse", cid, name, None, "%s: %s" % (e.code, e.detail))
        return Checked("log", None, None, None, "command rejected: %s: %s" % (e.code, e.detail))
    return Checked("run", cmd["id"], cmd["cmd"], cmd["args"], None)


def result_body(cid, name, ok, detail=None, error=None):
    """The body of a `result` record: id, cmd, ok, [detail], and error (cut to the contract's limit) if not ok."""
    body = {"id": cid, "cmd": name, "ok": bool(ok)}
    if detail is not None:
        body["detail"] = detail
    if not ok:
        body["error"] = (error or "failed")[:codec.MAX_LOG_TEXT]
    return body


class Commands:
    """Runs the commands the uplink queued in `inbox`, on the main thread, against the agent's parts."""

    def __init__(self, agent):
        """agent: the edge_agent.agent.Agent whose sensor, sampler, sender and outbox the handlers act on."""
        self.agent = agent
        self.inbox = queue.SimpleQueue()    # (payload, retained) from the uplink thread
        self._answers = {}                  # id -> (ok, detail, error), for redelivered commands

    def receive(self, payload, retained):
        """The uplink's on_command callback (any thread): queue it for run_pending()."""
        self.inbox.put((payload, retained))

    def run_pending(self):
        """Run every queued command; a failure is answered (or logged), never raised."""
        while True:
            try:
                payload, retained = self.inbox.get_nowait()
            except queue.Empty:
                return
            try:
                self._run(payload, retained)
            except Exception as e:  # a command must never take the agent down
                log.exception("command failed")
                cid, name = command_identity(payload)
                if cid is not None:
                    self.answer(cid, name, False, error="internal error: %s" % _short(e))

    def _run(self, payload, retained):
        agent = self.agent
        agent.counters["cmds"] += 1
        c = check(agent.dev, payload, retained)
        if c.action == "log":
            # Without a usable id and command name no result can answer it: log it instead.
            agent.counters["cmd_errors"] += 1
            agent.ship_log("warning", c.error)
        elif c.action == "refuse":
            self.answer(c.cid, c.name, False, error=c.error)
        elif c.cid in self._answers:
            # A redelivery: answer again, do not run it twice.
            ok, detail, error = self._answers[c.cid]
            self.answer(c.cid, c.name, ok, detail, error, remember=False)
        else:
            getattr(self, "_cmd_" + c.name)(c.cid, c.args)

    def answer(self, cid, name, ok, detail=None, error=None, remember=True):
        """Store the `result` record answering command cid; returns its keys ([] if it could not be stored)."""
        body = result_body(cid, name, ok, detail, error)
        if remember:
            if not ok:
                self.agent.counters["cmd_errors"] += 1
            self._answers[cid] = (ok, detail, body.get("error"))
            while len(self._answers) > REMEMBERED_COMMANDS:
                self._answers.pop(next(iter(self._answers)))
        ms, tq = self.agent.clock.stamp(time.monotonic())
        log.info("command %s %s: %s", name, cid, "ok" if ok else body["error"])
        return self.agent.enqueue("result", [(ms, tq, body)])

    def wake_sensor(self, why):
        """Measure again after sleep (wake command, or the sleep's time is over); an error text, or None."""
        agent = self.agent
        try:
            agent.sampler.reconfigure(agent.accel.wake)
        except OSError as e:
            return "wake failed: %s" % _short(e)
        agent.sleeping = False
        agent.wake_at = None
        agent.reset_stream()
        agent.sampler.paused.clear()
        log.info("measuring again (%s)", why)
        agent.publish_status()
        return None

    def capture_stored(self, cid, keys, n):
        """Answer capture command cid once its block of n samples is stored under keys ([]: it could not be)."""
        if keys:
            self.answer(cid, "capture", True, {"seq": keys[0][1], "boot": keys[0][0], "n": n})
        else:
            self.answer(cid, "capture", False, error="the waveform block could not be stored")

    def _abort_capture(self, why):
        agent = self.agent
        c, agent.capture = agent.capture, None
        if c is not None and c.cmd is not None:
            self.answer(c.cmd, "capture", False, error="capture interrupted: %s" % why)

    # ---- the handlers: (command id, decoded args) ---------------------------------------
    def _cmd_set_rate(self, cid, args):
        agent, hz = self.agent, args["hz"]
        try:
            agent.sampler.reconfigure(agent.accel.set_rate, hz)
        except (ValueError, OSError) as e:
            return self.answer(cid, "set_rate", False, error="set_rate %s Hz failed: %s" % (hz, _short(e)))
        self._abort_capture("the rate changed")
        agent.reset_stream()
        self.answer(cid, "set_rate", True, {"hz": _plain(agent.windowing.rate_hz)})

    def _cmd_set_range(self, cid, args):
        agent, g = self.agent, args["g"]
        try:
            agent.sampler.reconfigure(agent.accel.set_range, g)
        except (ValueError, OSError) as e:
            return self.answer(cid, "set_range", False, error="set_range %d g failed: %s" % (g, _short(e)))
        self._abort_capture("the range changed")
        agent.reset_stream()
        self.answer(cid, "set_range", True, {"g": int(agent.accel.range_g)})

    def _cmd_sleep(self, cid, args):
        agent = self.agent
        try:
            agent.sampler.reconfigure(agent.accel.sleep)
        except OSError as e:
            return self.answer(cid, "sleep", False, error="sleep failed: %s" % _short(e))
        agent.sleeping = True
        agent.sampler.paused.set()
        self._abort_capture("the sensor was put to sleep")
        agent.reset_stream()
        agent.wake_at = time.monotonic() + args["s"] if "s" in args else None
        self.answer(cid, "sleep", True, {"s": args["s"]} if "s" in args else None)
        agent.publish_status()

    def _cmd_wake(self, cid, args):
        if not self.agent.sleeping:
            return self.answer(cid, "wake", True, {"was_sleeping": False})
        err = self.wake_sensor("wake command")
        if err:
            return self.answer(cid, "wake", False, error=err)
        self.answer(cid, "wake", True, {"was_sleeping": True})

    def _cmd_capture(self, cid, args):
        agent = self.agent
        if agent.sleeping:
            return self.answer(cid, "capture", False, error="the sensor is asleep; send wake first")
        if agent.capture is not None and agent.capture.cmd is not None:
            return self.answer(cid, "capture", False, error="a capture is already under way")
        agent.start_capture(args.get("n", agent.conf["wave"]["samples"]), cid)  # answered when the block is stored

    def _cmd_flush(self, cid, args):
        self.agent.sender.flush()
        self.answer(cid, "flush", True, {"depth": self.agent.outbox.depth()})

    def _cmd_reboot(self, cid, args):
        # The agent restarts its own process (a new boot); the Pi itself is not rebooted.
        self.answer(cid, "reboot", True, {"restarting": "agent process"})
        self.agent.exit_action = "reboot"
        self.agent.stop()


def _plain(v):
    # 800.0 -> 800, 6.25 -> 6.25: integers where exact, for compact JSON.
    v = float(v)
    return int(v) if v.is_integer() else v


def _short(e):
    # An exception as a short text for a result's error.
    text = str(e) or type(e).__name__
    return text[:300]
