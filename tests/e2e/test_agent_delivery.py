"""End to end: the real edge-agent process (simulated ADXL345), real Mosquitto, the real collector, PostgreSQL.

What must hold after broker outages and agent crashes: every record the agent
stored in its outbox is in the database exactly once, keyed (device, boot, seq),
the keys of each boot run from 0 without a gap, and the outbox ends empty.
"""

import json
import os
import random
import re
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import paho.mqtt.client as paho
import psycopg
import pytest

from fieldwatch.devservices.collector import CollectorProcess
from fieldwatch.wire import codec, topics
from tests.harness.waiting import wait_for

# Record tables and how each stores a record's key; a result is keyed in commands.
KEY_QUERIES = [
    "SELECT boot, seq FROM %s WHERE device_id = %%s" % t
    for t in ("readings", "fixes", "feature_windows", "waveforms", "device_logs")
] + ["SELECT result_boot, result_seq FROM commands WHERE device_id = %s AND result_seq IS NOT NULL"]

STORED = re.compile(r"stored (\w+) (\d+):(\d+)-(\d+)\n")

AGENT_ENV = {
    "EDGE_AGENT_FEATURES_WINDOW_MS": "50",        # 20 feature windows/s at 800 Hz
    "EDGE_AGENT_WAVE_EVERY_S": "1",
    "EDGE_AGENT_WAVE_SAMPLES": "256",
    "EDGE_AGENT_STATUS_INTERVAL_S": "1",
    "EDGE_AGENT_MQTT_RECONNECT_MIN_S": "0.1",
    "EDGE_AGENT_MQTT_RECONNECT_MAX_S": "0.5",
    "EDGE_AGENT_OUTBOX_ACK_SETTLE_S": "0.3",
    "EDGE_AGENT_OUTBOX_RESEND_AFTER_S": "5",
    "EDGE_AGENT_OUTBOX_BACKLOG_RECORDS_PER_S": "5000",
    "EDGE_AGENT_OUTBOX_EXIT_DRAIN_S": "25",
}


class AgentProcess:
    """`edge-agent run` as a child process with its own state directory and log."""

    def __init__(self, dev, mqtt_url, state_dir, extra_env=None):
        self.dev = dev
        self.state_dir = state_dir
        self.env = dict(os.environ, MQTT_URL=mqtt_url, **AGENT_ENV)
        self.env.update(extra_env or {})
        self.log = tempfile.NamedTemporaryFile(prefix="agent-", suffix=".log", delete=False)
        self.proc = None
        self.starts = 0

    def start(self):
        self.starts += 1
        self.log.write(("\n--- start %d ---\n" % self.starts).encode())
        self.log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_agent.cli", "run", "--device-id", self.dev, "--hardware", "sim",
             "--state-dir", self.state_dir, "-v"],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        return self

    def wait_for_log(self, text, timeout=20):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if text in self.output().rsplit("--- start", 1)[-1]:
                return
            if self.proc.poll() is not None:
                raise RuntimeError("edge-agent exited (%s):\n%s" % (self.proc.returncode, self.output()[-3000:]))
            time.sleep(0.05)
        raise TimeoutError("edge-agent did not log %r within %ss:\n%s" % (text, timeout, self.output()[-3000:]))

    def kill(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout=40):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def output(self):
        return Path(self.log.name).read_text(errors="replace")

    def stored_keys(self):
        """Keys the agent logged as committed to its outbox (a line cut by SIGKILL is not matched)."""
        keys = set()
        for kind, boot, lo, hi in STORED.findall(self.output()):
            keys.update((int(boot), s) for s in range(int(lo), int(hi) + 1))
        return keys

    def outbox_depth(self):
        db = sqlite3.connect(os.path.join(self.state_dir, "outbox.db"))
        try:
            return db.execute("SELECT coalesce(sum(n), 0) FROM segments").fetchone()[0]
        finally:
            db.close()

    def cleanup(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        os.unlink(self.log.name)


@pytest.fixture
def agent_factory(tmp_path):
    made = []

    def make(dev, mqtt_url, extra_env=None):
        a = AgentProcess(dev, mqtt_url, str(tmp_path / dev), extra_env)
        made.append(a)
        return a
    yield make
    for a in made:
        a.cleanup()


@pytest.fixture
def collector_factory():
    made = []

    def make(mqtt_url, db_url):
        c = CollectorProcess(mqtt_url, db_url, client_id="collector-%s" % uuid.uuid4().hex[:8])
        made.append(c)
        return c.start()
    yield make
    for c in made:
        c.kill()
        os.unlink(c.log.name)


def db_keys(db_url, dev):
    """Every record key of dev in the database, as a list (duplicates would show twice)."""
    keys = []
    with psycopg.connect(db_url) as conn:
        for q in KEY_QUERIES:
            keys.extend(tuple(r) for r in conn.execute(q, (dev,)).fetchall())
    return keys


def check_delivery(db_url, agent):
    """Exactly once, gapless per boot, everything the agent stored is there, outbox empty."""
    keys = db_keys(db_url, agent.dev)
    assert len(keys) == len(set(keys)), "duplicate keys in the database"
    held = set(keys)
    stored = agent.stored_keys()
    assert stored, "the agent logged no stored records"
    missing = stored - held
    assert not missing, "%d stored records never reached the database, e.g. %s" % (len(missing), sorted(missing)[:5])
    boots = sorted({b for b, _ in held})
    assert len(boots) == agent.starts, "boots %s for %d starts" % (boots, agent.starts)
    for boot in boots:
        seqs = sorted(s for b, s in held if b == boot)
        assert seqs == list(range(len(seqs))), "gap in boot %d" % boot
    assert agent.outbox_depth() == 0
    return held


def send_command(mqtt_url, dev, payload):
    """Publish one command (QoS 1) as an operator tool would."""
    host, port = mqtt_url.rsplit("/", 1)[-1].split(":")
    c = paho.Client(callback_api_version=paho.CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
    c.connect(host, int(port))
    c.loop_start()
    try:
        c.publish(topics.topic(dev, "cmd"), payload, qos=1).wait_for_publish(5)
    finally:
        c.disconnect()
        c.loop_stop()


def test_agent_delivers_everything_once_across_a_broker_outage(fresh_broker, fresh_db, agent_factory,
                                                              collector_factory):
    collector_factory(fresh_broker.url, fresh_db)
    agent = agent_factory("pi-outage", fresh_broker.url).start()
    agent.wait_for_log("connected to")
    time.sleep(1.5)
    # Commands: a capture, a bad argument, and a payload that cannot even be answered.
    send_command(fresh_broker.url, agent.dev, codec.encode_cmd("cap-1", "capture", {"n": 64}, int(time.time() * 1000)))
    send_command(fresh_broker.url, agent.dev, json.dumps({"v": 1, "id": "bad-1", "cmd": "set_rate", "args": {"hz": 7},
                                                          "ts": 0}).encode())
    send_command(fresh_broker.url, agent.dev, b"\xff not json")
    time.sleep(0.5)                         # the capture completes (a rate change would interrupt it)
    send_command(fresh_broker.url, agent.dev, codec.encode_cmd("rate-1", "set_rate", {"hz": 400}, 0))
    time.sleep(0.5)
    send_command(fresh_broker.url, agent.dev, codec.encode_cmd("sleep-1", "sleep", {}, 0))
    time.sleep(0.3)
    send_command(fresh_broker.url, agent.dev, codec.encode_cmd("wake-1", "wake", {}, 0))
    time.sleep(0.5)
    fresh_broker.stop()                     # the agent keeps measuring into its outbox
    time.sleep(2.5)
    fresh_broker.start()
    agent.wait_for_log("connection 2:", timeout=15)
    buffered = int(re.search(r"connection 2: outbox holds (\d+) records", agent.output()).group(1))
    assert buffered >= 20                   # what was measured during the outage (20 windows/s)
    time.sleep(1.5)
    assert agent.terminate() == 0           # stops sampling, drains, waits for confirmations
    held = check_delivery(fresh_db, agent)
    assert len(held) > 100
    out = agent.output()
    assert "disconnected from" in out and "Traceback" not in out
    with psycopg.connect(fresh_db) as conn:
        rows = dict((r[0], r[1:]) for r in conn.execute(
            "SELECT id, ok, error, detail, result_seq FROM commands WHERE device_id = %s", (agent.dev,)))
        assert rows["cap-1"][0] is True
        wave_seq = rows["cap-1"][2]["seq"]
        n = conn.execute("SELECT n FROM waveforms WHERE device_id = %s AND seq = %s", (agent.dev, wave_seq)).fetchone()
        assert n == (64,)
        assert rows["bad-1"][0] is False and rows["bad-1"][1].startswith("bad_argument: set_rate.hz=7")
        assert rows["rate-1"][:3] == (True, None, {"hz": 400})
        assert rows["sleep-1"][0] is True and rows["wake-1"][:3] == (True, None, {"was_sleeping": True})
        rates = {r[0] for r in conn.execute("SELECT DISTINCT rate_hz FROM feature_windows WHERE device_id = %s",
                                            (agent.dev,))}
        assert rates == {800.0, 400.0}
        logs = [r[0] for r in conn.execute("SELECT text FROM device_logs WHERE device_id = %s", (agent.dev,))]
        assert any(t.startswith("command rejected: bad_json") for t in logs)
        state, depth = conn.execute("SELECT state, buf_depth FROM devices WHERE device_id = %s",
                                    (agent.dev,)).fetchone()
        assert state == "offline" and depth == 0
        windows = conn.execute("SELECT count(*), min(x_rms), max(z_rms) FROM feature_windows WHERE device_id = %s",
                               (agent.dev,)).fetchone()
        assert windows[0] > 50 and windows[1] > 0


def test_agent_sigkilled_at_random_moments_loses_and_duplicates_nothing(fresh_broker, fresh_db, agent_factory,
                                                                       collector_factory):
    collector_factory(fresh_broker.url, fresh_db)
    # The counter source numbers every sample, so waveform blocks show any lost or repeated one.
    agent = agent_factory("pi-crashy", fresh_broker.url, {"EDGE_AGENT_SENSOR_SIM_SOURCE": "counter"})
    rng = random.Random(20261123)
    for _ in range(4):
        agent.start()
        agent.wait_for_log("started: boot")
        time.sleep(rng.uniform(0.3, 2.0))
        agent.kill()
    agent.start()
    agent.wait_for_log("connected to")
    # Everything of the earlier boots arrives as backlog while the new boot runs.
    wait_for(lambda: not (agent.stored_keys() - set(db_keys(fresh_db, agent.dev))) or None, timeout=20,
             what="the backlog to reach the database", interval=0.1)
    assert agent.terminate() == 0
    check_delivery(fresh_db, agent)
    out = agent.output()
    assert "Traceback" not in out
    with psycopg.connect(fresh_db) as conn:
        blocks = conn.execute("SELECT n, axes, samples FROM waveforms WHERE device_id = %s", (agent.dev,)).fetchall()
    assert len(blocks) >= 3
    for n, axes, samples in blocks:
        counts = struct.unpack("<%dh" % (n * axes), samples)
        index = [(counts[3 * i + 1] + 500) * 1000 + counts[3 * i] + 500 for i in range(n)]
        assert index == list(range(index[0], index[0] + n)), "samples lost or repeated in a waveform block"
    # The kills left unconfirmed records behind, which later boots delivered.
    assert sum(int(n) for n in re.findall(r"outbox holds (\d+) records\n", out)) > 0


def test_agent_outbox_full_drops_the_oldest_counts_and_reports_them(fresh_broker, fresh_db, agent_factory,
                                                                   collector_factory):
    """Outbox bound 100 records, broker away ~8 s at ~21 records/s: the oldest are dropped, every
    drop is logged and reported in the status (devices.buf_drops), and nothing else is lost."""
    collector_factory(fresh_broker.url, fresh_db)
    agent = agent_factory("pi-full", fresh_broker.url, {"EDGE_AGENT_OUTBOX_MAX_RECORDS": "100"}).start()
    agent.wait_for_log("connected to")
    time.sleep(1.0)
    fresh_broker.stop()
    time.sleep(8.0)
    fresh_broker.start()
    agent.wait_for_log("connection 2:", timeout=15)
    back = max(s for _, s in agent.stored_keys())          # stored before the broker came back
    time.sleep(2.0)
    assert agent.terminate() == 0
    out = agent.output()
    dropped, dropped_keys = 0, set()
    for n, ranges in re.findall(r"outbox full \(100 records\): dropped the (\d+) oldest: ([-0-9:, ]+)\n", out):
        dropped += int(n)
        for r in ranges.split(", "):
            boot, span = r.split(":")
            lo, hi = span.split("-")
            dropped_keys.update((int(boot), s) for s in range(int(lo), int(hi) + 1))
    assert dropped > 20 and len(dropped_keys) == dropped and "Traceback" not in out
    keys = db_keys(fresh_db, agent.dev)
    assert len(keys) == len(set(keys)), "duplicate keys in the database"
    missing = agent.stored_keys() - set(keys)
    # Nothing is lost but what was counted and named as dropped (some of those had reached the
    # database already: their confirmation was lost with the broker), and old records go, not new ones.
    assert missing and missing <= dropped_keys
    assert max(s for _, s in dropped_keys) < back
    assert agent.outbox_depth() == 0
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("SELECT buf_drops FROM devices WHERE device_id = %s", (agent.dev,)).fetchone() == (dropped,)
