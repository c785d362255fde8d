"""The status message: state, buffer figures and health counters (docs/wire.md, "status").

The main loop takes a snapshot of the figures once per pass (snapshot()); the
message itself is built from that snapshot (payload()), which the uplink thread
also calls when it connects (online, retained) and for its will (offline), so it
never touches the outbox (SQLite belongs to the main thread).
"""

import time

from fieldwatch import __version__
from fieldwatch.wire import codec, topics

MAX_HEALTH = 32       # health figures in a status message at most (the first ones are kept)

# The agent's own counters, in the order health shows them after the sensor's, the
# outbox's and the uplink's figures (Status.snapshot): windows made and discarded
# (cut short by an overrun, or partial at exit), waveform blocks, readings, commands
# and the failed ones, records that could not be stored, main-loop errors, batches and
# records published, records confirmed, log records not shipped, GPS fixes stored,
# gpsd connections and failed attempts, button presses.
AGENT_COUNTERS = ("windows", "windows_discarded", "waves", "readings", "cmds", "cmd_errors", "enqueue_errors",
                  "loop_errors", "batches_sent", "records_sent", "records_confirmed", "logs_suppressed",
                  "gps_fixes", "gps_connects", "gps_connect_failures", "button_presses")


class Status:
    """Status figures of one agent, and the status message made from them."""

    def __init__(self, agent, reset_reason):
        """agent: the edge_agent.agent.Agent whose sensor, sampler, outbox, uplink and counters are reported."""
        self.agent = agent
        self.reset_reason = reset_reason
        self.version = __version__
        self._snapshot = {"depth": agent.outbox.depth(), "oldest_s": 0.0, "drops": 0, "health": {}}

    def snapshot(self):
        """Take the current figures (main thread only: it asks the outbox)."""
        a = self.agent
        ob, up = a.outbox, a.uplink.counters
        health = {
            "fifo_overruns": a.accel.overruns,
            "i2c_errors": a.accel.i2c_errors + a.sampler.read_errors,
            "drops_total": ob.drops,
            "resends": ob.resends,
            "records_enqueued": ob.appended,
            "reconnects": max(0, up["connects"] - 1),
            "connect_failures": up["connect_failures"],
            "publish_rejected": up["publish_rejected"],
            "acks_invalid": up["acks_invalid"],
            "link_errors": up["link_errors"],
        }
        health.update(a.counters)
        self._snapshot = {"depth": ob.depth(), "oldest_s": ob.oldest_age_s(), "drops": ob.drops_since_open,
                          "health": dict(list(health.items())[:MAX_HEALTH])}

    def payload(self, state):
        """The status message for state (online, offline; online while asleep says sleeping), from the snapshot."""
        # Called from the uplink thread too: uses only the snapshot and plain attributes.
        a = self.agent
        if state == "online" and a.sleeping:
            state = "sleeping"
        boot, seq = a.keys.next_key
        ms, tq = a.clock.stamp(time.monotonic())
        s = self._snapshot
        return codec.encode_status(a.dev, boot, seq, ms, tq, state, self.version[:32], a.conf["device"]["hw"],
                                   self.reset_reason, min(s["depth"], codec.MAX_U32), round(s["oldest_s"], 1),
                                   min(s["drops"], codec.MAX_U32), s["health"])

    def publish(self, uplink):
        """Publish the status message (retained) now."""
        uplink.publish(topics.topic(self.agent.dev, "status"), self.payload("online"), retain=True)
