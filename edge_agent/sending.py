"""Sending: outbox -> uplink, paced; delivery confirmations back into the outbox; log shipping.

Sender.drain() publishes the outbox's batches while the uplink's window of
un-acknowledged publishes has room. Live records (made since the connection came
up) go first, as fast as that window allows; backlog (records of earlier boots,
made while offline, or unconfirmed for too long) follows at
outbox.backlog_records_per_s, paced by a token bucket (edge_agent.ratelimit).
After a reconnect every unconfirmed record is sent again, after ack_settle_s, so
confirmations the broker queued for us arrive first and spare the resend. The
flush command (and the shutdown drain) sends the backlog unpaced.

LogShipper puts the agent's notable events in the outbox as `log` records, through
the same kind of token bucket (logs.ship_per_s, logs.ship_burst).
"""

import logging
import queue
import time

from edge_agent.outbox import OutboxError
from edge_agent.ratelimit import TokenBucket
from fieldwatch.wire import codec, topics

log = logging.getLogger("edge_agent.sending")

FLUSH_S = 300.0          # the flush command sends the backlog unpaced for this long at most, s
EXIT_POLL_S = 0.02       # the shutdown drain's pass interval, s


class Sender:
    """Publishes outbox batches through the uplink and applies the collector's confirmations."""

    def __init__(self, dev, outbox, uplink, acks, settings, counters):
        """acks: the queue the uplink puts confirmed key ranges in; settings: the [outbox] section.

        counters (a dict shared with the agent's status) gets batches_sent, records_sent
        and records_confirmed added up.
        """
        self.dev = dev
        self.outbox = outbox
        self.uplink = uplink
        self.acks = acks
        self.counters = counters
        self.batch_records = settings["batch_records"]
        self.ack_settle_s = settings["ack_settle_s"]
        rate = settings["backlog_records_per_s"]
        # Backlog pace: starts empty, holds at most a second's worth or one full batch.
        self._pace = TokenBucket(rate, max(rate, float(self.batch_records)), full=False)
        self._generation = 0
        self._backlog_hold_until = 0.0
        self._flush_until = 0.0

    def flush(self):
        """The flush command: send the backlog unpaced (for FLUSH_S at most), without waiting for confirmations."""
        self._flush_until = time.monotonic() + FLUSH_S
        self._backlog_hold_until = 0.0

    def apply_acks(self):
        """Delete what the confirmations that arrived since the last call cover from the outbox."""
        ranges = []
        while True:
            try:
                ranges.extend(self.acks.get_nowait())
            except queue.Empty:
                break
        if ranges:
            try:
                self.counters["records_confirmed"] += self.outbox.confirm(ranges)
            except OutboxError as e:
                log.error("could not apply a delivery confirmation: %s", e)  # resent later, harmless

    def drain(self, pace=True):
        """Publish batches while the uplink has room: live first, backlog paced unless pace is False or flushing."""
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
            self._backlog_hold_until = time.monotonic() + self.ack_settle_s
            log.info("connection %d: outbox holds %d records (%d of them sent before, unconfirmed)",
                     up.generation, ob.depth(), n)
        now = time.monotonic()
        budget = self._pace.available()      # backlog records we may send in this pass
        while up.can_publish():
            unpaced = not pace or now < self._flush_until
            if now < self._backlog_hold_until and not unpaced:
                backlog = 0
            elif unpaced:
                backlog = None
            else:
                backlog = budget
            try:
                batch = ob.next_to_send(max_records=self.batch_records, backlog_records=backlog)
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
                self._pace.spend(len(batch))
                budget -= len(batch)

    def drain_before_exit(self, seconds):
        """On the way out: send everything unpaced and apply confirmations, for up to `seconds` while connected."""
        end = time.monotonic() + seconds
        self._flush_until = end
        while time.monotonic() < end and self.outbox.depth() > 0 and self.uplink.connected:
            self.apply_acks()
            self.drain(pace=False)
            time.sleep(EXIT_POLL_S)
        self.apply_acks()


class LogShipper:
    """Logs locally always; ships a `log` record at most logs.ship_per_s on average, the rest counted."""

    def __init__(self, settings, clock, enqueue, counters, logger=log):
        """settings: the [logs] section; clock: a clock.Clock; enqueue(kind, items) -> keys ([] if not stored).

        counters gets logs_suppressed added up.
        """
        self.bucket = TokenBucket(settings["ship_per_s"], settings["ship_burst"])
        self.clock = clock
        self.enqueue = enqueue
        self.counters = counters
        self.logger = logger
        self._held = 0          # log records not shipped since the last one that was

    def __call__(self, level, text):
        """Log text at level ('info', 'warning', ...) and ship it as a `log` record if the bucket allows."""
        # A flood of bad commands must not flood the outbox: what is held back is counted,
        # and the next shipped record is preceded by one saying how many were.
        self.logger.log(getattr(logging, level.upper(), logging.INFO), "%s", text)
        if not self.bucket.take():
            self._held += 1
            self.counters["logs_suppressed"] += 1
            return
        ms, tq = self.clock.stamp(time.monotonic())
        items = []
        if self._held:
            items.append((ms, tq, ["warning", "%d log messages not shipped (over logs.ship_per_s %g/s, burst %d)"
                                   % (self._held, self.bucket.rate, self.bucket.burst)]))
        items.append((ms, tq, [level, text[:codec.MAX_LOG_TEXT]]))
        if self.enqueue("log", items):
            self._held = 0
