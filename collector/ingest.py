"""The ingest loop: receive, validate, batch, commit, then acknowledge.

Order of events for every message, which is what makes ingest exactly-once:
  1. it arrives (not yet acknowledged to the broker);
  2. it is validated and its rows (or its quarantine row) join the batch;
  3. the batch commits in one transaction, deduplicated on the record keys;
  4. only then is its PUBACK sent (in arrival order), and each device gets a
     delivery confirmation for the keys the batch settled.
A crash before 4 means the broker redelivers (persistent session) and the
database drops the duplicates; a crash after 3 loses nothing either.
While the database is down nothing is acknowledged, the batches stay bounded
(batch_max, and the broker's inflight window), and commits are retried with
backoff until they succeed (/readyz says so meanwhile). No message can stop
this: one that breaks the contract, or that the decoder fails on, is
quarantined in step 2; one the database refuses for what it holds
(store.refused: a value out of range, a constraint) is found by splitting the
batch in halves, committed separately, and quarantined as store_rejected,
while the rest of the batch is stored.

Two threads share the work (plus paho's network thread, which only decodes
packets into Messages): the receiving thread (run()) validates messages into
the open batch; the writer thread commits one batch at a time, then acks it.
While the writer waits on the database the next batch fills, so receiving
never stops for a commit. The writer takes the open batch as soon as it is
due (batch_max messages, or batch_age_ms after its first message) and the
writer is free; under load a batch therefore holds what arrived during the
previous commit (group commit), at light load it waits at most batch_age_ms.
Batches are committed and acknowledged strictly in order.
"""

import logging
import queue
import random
import threading
import time

import psycopg

from collector.batch import Batch
from collector.store import refused
from fieldwatch.wire import codec, topics

log = logging.getLogger("collector.ingest")

MAX_RANGES_PER_ACK = 100  # an ESP32 decodes an ack in ~155 B of heap per range
_WAKE = object()          # put on the message queue by the writer when it becomes free


class Ingest:
    """Runs the loop on the calling thread until stop() and the last flush."""

    def __init__(self, link, store, metrics, batch_max=1000, batch_age_ms=20):
        self.link = link
        self.store = store
        self.metrics = metrics
        self.batch_max = batch_max
        self.batch_age_s = batch_age_ms / 1000.0
        self._stop = threading.Event()
        self.stopped = threading.Event()
        self._next_maintenance = 0.0
        self._idle = threading.Event()   # the writer holds no batch
        self._idle.set()
        self._handed = queue.SimpleQueue()  # batches for the writer; None tells it to finish
        self._gave_up = False            # the writer stopped with a batch uncommitted (database down at stop)
        self.heartbeat = lambda: None    # called on every pass of the receiving loop (systemd's watchdog)

    def stop(self):
        """Ask the loop to flush what it has, acknowledge it and return."""
        self._stop.set()

    def run(self):
        """Receive and commit until stop(); the final batch is flushed before returning."""
        writer = threading.Thread(target=self._write_loop, name="collector-writer", daemon=True)
        writer.start()
        try:
            self._receive_loop()
        finally:
            self._handed.put(None)
            writer.join()
            self.stopped.set()

    def _receive_loop(self):
        get, get_nowait = self.link.messages.get, self.link.messages.get_nowait
        batch = Batch()
        deadline = None
        while not self._gave_up:
            idle = self._idle.is_set()
            full = len(batch) >= self.batch_max
            if full and not idle:
                self._idle.wait(0.2)          # full: wait for the writer, leave new messages queued
            elif not full:
                if deadline is None or not idle:
                    timeout = 0.2             # nothing due, or the writer is busy: it wakes us when free
                else:
                    timeout = max(0.0, deadline - time.monotonic())
                try:
                    msg = get(timeout=timeout)
                except queue.Empty:
                    msg = None
                while msg is not None:        # take what is queued, without waiting, up to batch_max
                    if msg is not _WAKE:
                        self._add(batch, msg)
                        if deadline is None:
                            deadline = time.monotonic() + self.batch_age_s
                        if len(batch) >= self.batch_max:
                            break
                    try:
                        msg = get_nowait()
                    except queue.Empty:
                        msg = None
            stopping = self._stop.is_set()
            if batch.messages and self._idle.is_set() and (
                    stopping or len(batch) >= self.batch_max or time.monotonic() >= deadline):
                self._hand_off(batch)
                batch, deadline = Batch(), None
            if stopping and not batch.messages:
                return
            self._maintain()
            self.heartbeat()

    def _add(self, batch, msg):
        code = batch.add(msg)
        if code is not None:
            self.metrics.quarantined(code)
            log.info("quarantined message on %r: %s", msg.topic[:120], code)

    def _hand_off(self, batch):
        m = self.metrics
        m.add("messages_received", len(batch))
        m.add("messages_valid", len(batch) - batch.invalid)
        m.add("records_received", batch.records)
        self._idle.clear()
        self._handed.put(batch)

    def _write_loop(self):
        # The writer thread: commit and acknowledge batches in the order they were handed over.
        while True:
            batch = self._handed.get()
            if batch is None:
                return
            if not self._flush(batch):
                self._gave_up = True   # stopping with the database unreachable: nothing acked, the broker keeps it
            self._idle.set()
            self.link.messages.put(_WAKE)

    def _flush(self, batch):
        # Commit with retries; False only if asked to stop while the database stays down.
        # A batch the database refuses for what it holds (store.refused) is split in halves, each
        # committed on its own, down to the message(s) refused, which are quarantined instead.
        delay = 0.5
        last_try = False
        self.metrics.acks_pending = len(batch)
        parts = [batch]              # what is left to commit, in order
        written, records = {}, 0
        t0 = time.monotonic()
        while parts:
            part = parts[0]
            try:
                got = self.store.write(part)
            except Exception as e:
                why = _first_line(e)
                if refused(e) and not part.refused_only:
                    parts[0:1] = self._split(part, why)
                    continue
                # The database is away, busy or broken (or cannot even take a quarantine row): retry.
                self.metrics.commit_failed(why)
                log.warning("commit of %d messages failed (%s); retrying in %.1f s", len(part), why, delay)
                if last_try:
                    return False
                if self._stop.wait(delay):
                    last_try = True  # one last try on the way out, then leave it to the broker
                delay = min(delay * 2, 10.0) * random.uniform(0.8, 1.2)
                continue
            parts.pop(0)
            records += part.records
            for table, n in got.items():
                written[table] = written.get(table, 0) + n
            self.metrics.commit_succeeded()
        seconds = time.monotonic() - t0
        now_ms = time.time() * 1000
        self.metrics.batch_committed(len(batch), records, written, seconds, (now_ms - batch.first_recv_ms) / 1000.0)
        self.link.ack_all(batch.messages)  # PUBACKs in arrival order, as MQTT requires; one write
        self.metrics.add("acks_sent", len(batch))
        self.metrics.acks_pending = 0
        for dev, ranges in batch.confirmations():
            for i in range(0, len(ranges), MAX_RANGES_PER_ACK):
                self.link.publish(topics.topic(dev, "ack"), codec.encode_ack(dev, ranges[i:i + MAX_RANGES_PER_ACK]))
                self.metrics.add("confirmations_sent")
        return True

    def _split(self, part, why):
        # The pieces to commit instead of a refused batch: its halves, or, for one message, its quarantine row.
        if len(part) > 1:
            log.warning("the database refused a batch of %d messages (%s); splitting it to find the message",
                        len(part), why)
            return part.halves()
        msg = part.messages[0]
        self.metrics.quarantined("store_rejected")
        log.warning("quarantined message on %r: store_rejected (%s)", msg.topic[:120], why)
        return [Batch.refused(msg, "the database refused it: " + why)]

    def _maintain(self):
        # Hourly: make sure the monthly partitions ahead exist (plain PostgreSQL only).
        now = time.monotonic()
        if now < self._next_maintenance:
            return
        self._next_maintenance = now + 3600
        try:
            self.store.maintain()
        except psycopg.Error as e:
            self._next_maintenance = now + 60
            log.warning("partition maintenance postponed: %s", e)


def _first_line(e):
    # The first line of an error's message (the database's own words), or its type.
    text = str(e).strip()
    return text.splitlines()[0][:500] if text else type(e).__name__
