"""Ingest benchmark: the collector against the raw limits, measured in the same run.

Starts a private Mosquitto and PostgreSQL, then measures:
  (a) raw drain: a bare paho subscriber (MQTT 5, manual ack, no database)
      draining a queued backlog of single-reading messages;
  (b) collector drain: the same backlog drained by the collector (validation,
      COPY, dedupe, ack after commit), with N collector processes on a shared
      subscription; msg/s and the ratio to (a);
  (c) live load at a paced rate: latency from publish to the device receiving
      the delivery confirmation (which is sent after commit) — p50/p95/p99;
  (d) waveform blocks: accelerometer samples committed per second;
  plus the raw COPY rate of the database (binary COPY into a bare table).

    python -m tools.bench_ingest                 # full run (~2-3 minutes)
    python -m tools.bench_ingest --quick --json  # smaller, one JSON object
"""

import argparse
import json
import os
import random
import statistics
import sys
import threading
import time

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.harness.broker import Broker
from tests.harness.collector import CollectorProcess, wait_rows
from tests.harness.postgres import PostgresCluster
from tools.loadgen import ConfirmingPublisher, reading_payload
from wire import codec, topics


def progress(msg):
    print("  .. " + msg, file=sys.stderr, flush=True)


def preload(url, n, devices, boot=1, client_id=None):
    """Queue n single-reading messages from `devices` devices; return msgs/s of the publish."""
    pub = ConfirmingPublisher(url, client_id or "bench-pub-%d" % random.randrange(1 << 30), max_unacked=20000)
    pub.start()
    devs = ["bench-%03d" % i for i in range(devices)]
    now = int(time.time() * 1000)
    payloads = [(devs[i % devices], i // devices) for i in range(n)]
    t0 = time.monotonic()
    for dev, seq in payloads:
        pub.send(dev, "readings", boot, seq, seq, reading_payload(dev, boot, seq, now + seq))
    # Wait for every PUBACK (the broker has them queued for the subscribers).
    for _ in range(20000):
        pub._unacked.acquire()
    dt = time.monotonic() - t0
    pub.stop()
    return n / dt


def make_session(url, client_id):
    """Create a persistent subscriber session so the broker queues the backlog for it."""
    c = paho.Client(callback_api_version=paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=paho.MQTTv5)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    host, port = url.split("//")[1].split(":")
    c.connect(host, int(port), clean_start=False, properties=props)
    c.loop_start()
    r = c.subscribe([(f, 1) for f in topics.COLLECTOR_FILTERS])
    time.sleep(0.5)
    c.disconnect()
    c.loop_stop()


def raw_drain(url, client_id, n):
    """Bare paho subscriber with manual ack draining n queued messages; msgs/s."""
    got = [0]
    done = threading.Event()
    first = [None]

    def on_message(client, userdata, m):
        if first[0] is None:
            first[0] = time.monotonic()
        client.ack(m.mid, m.qos)
        got[0] += 1
        if got[0] >= n:
            done.set()
    c = paho.Client(callback_api_version=paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=paho.MQTTv5, manual_ack=True)
    c.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = 2000
    host, port = url.split("//")[1].split(":")
    t0 = time.monotonic()
    c.connect(host, int(port), clean_start=False, properties=props)
    c.loop_start()
    done.wait(600)
    dt = time.monotonic() - t0
    c.disconnect()
    c.loop_stop()
    return got[0] / dt


def raw_copy_rate(db_url, rows=300000):
    """Binary COPY of reading-shaped rows into a bare table; rows/s."""
    with psycopg.connect(db_url) as conn:
        conn.execute("CREATE TEMP TABLE bench_copy (device_id text, boot int8, seq int8, ts_ms int8, recv_ms int8,"
                     " tq text, name text, value float8)")
        data = [("bench-%03d" % (i % 50), 1, i, 1763880000000 + i, 1763880000000 + i, "ntp", "rms_g", 0.07)
                for i in range(rows)]
        t0 = time.monotonic()
        with conn.cursor() as cur:
            for i in range(0, rows, 5000):
                with cur.copy("COPY bench_copy FROM STDIN (FORMAT BINARY)") as cp:
                    cp.set_types(["text", "int8", "int8", "int8", "int8", "text", "text", "float8"])
                    for r in data[i:i + 5000]:
                        cp.write_row(r)
                conn.commit()
        return rows / (time.monotonic() - t0)


def collector_drain(broker, db_url, n, devices, collectors):
    """Queue n messages for a shared-subscription group, then time the collectors draining them."""
    group = "bench%d" % random.randrange(1 << 20)
    procs = [CollectorProcess(broker.url, db_url, client_id="bench-coll-%d" % i, share_group=group)
             for i in range(collectors)]
    for p in procs:        # create the sessions and shared subscriptions, then leave
        p.start()
    for p in procs:
        p.terminate()
    rate_pub = preload(broker.url, n, devices, boot=2)
    progress("backlog of %d queued (publish %.0f msg/s); draining with %d collector(s)" % (n, rate_pub, collectors))
    with psycopg.connect(db_url) as conn:
        base = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    t0 = time.monotonic()
    for p in procs:
        p.start(wait=False)
    got = wait_rows(db_url, base + n, timeout=900)
    dt = time.monotonic() - t0
    for p in procs:
        p.terminate()
    return (got - base) / dt, got - base


def live(broker, db_url, rate, seconds, collectors):
    """Paced publishing; latency from publish to delivery confirmation (after commit)."""
    procs = [CollectorProcess(broker.url, db_url, client_id="live-coll-%d" % i, share_group="live")
             for i in range(collectors)]
    for p in procs:
        p.start()
    pub = ConfirmingPublisher(broker.url, "live-pub")
    sent_at = {}
    lat = []
    orig = pub._on_message

    def on_ack(client, userdata, m):
        t = time.monotonic()
        d = codec.decode(m.topic, m.payload)
        for boot, lo, hi in d["ranges"]:
            for s in range(lo, hi + 1):
                st = sent_at.pop((d["dev"], s), None)
                if st is not None:
                    lat.append(t - st)
        orig(client, userdata, m)
    pub.client.on_message = on_ack
    pub.start()
    devs = ["live-%03d" % i for i in range(50)]
    n = int(rate * seconds)
    t0 = time.monotonic()
    for i in range(n):
        dev, seq = devs[i % 50], i // 50
        sent_at[(dev, seq)] = time.monotonic()
        pub.send(dev, "readings", 3, seq, seq, reading_payload(dev, 3, seq, int(time.time() * 1000)))
        ahead = (i + 1) / rate - (time.monotonic() - t0)
        if ahead > 0:
            time.sleep(ahead)
    achieved = n / (time.monotonic() - t0)
    pub.wait_confirmed(60)
    pub.stop()
    for p in procs:
        p.terminate()
    lat.sort()
    q = lambda p: 1000 * lat[min(len(lat) - 1, int(p * len(lat)))] if lat else float("nan")  # noqa: E731
    return achieved, q(0.50), q(0.95), q(0.99), len(lat)


def waveforms(broker, db_url, blocks, n_per_axis):
    """Publish waveform blocks and time their commit; samples (per axis x axes) per second."""
    c = CollectorProcess(broker.url, db_url, client_id="wave-coll").start()
    pub = ConfirmingPublisher(broker.url, "wave-pub")
    pub.start()
    samples = os.urandom(2 * 3 * n_per_axis)
    now = int(time.time() * 1000)
    t0 = time.monotonic()
    for i in range(blocks):
        dev = "wave-%02d" % (i % 10)
        pub.send(dev, "wave", 4, i, i, codec.encode_wave(dev, 4, i, now + i, "ntp", 3200, 0.0039, 16, 3,
                                                         n_per_axis, samples))
    pub.wait_confirmed(300)
    dt = time.monotonic() - t0
    pub.stop()
    c.terminate()
    with psycopg.connect(db_url) as conn:
        stored = conn.execute("SELECT count(*) FROM waveforms").fetchone()[0]
    bytes_per = (codec.WAVE_HEADER_SIZE + 7 + len(samples)) / (3 * n_per_axis)
    return stored * 3 * n_per_axis / dt, stored, bytes_per


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def main(argv=None):
    """Run the benchmark and print a table (or one JSON object)."""
    p = argparse.ArgumentParser(prog="python -m tools.bench_ingest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=200000, help="backlog size for (a) and (b) (default %(default)s)")
    p.add_argument("--devices", type=int, default=50, help="simulated devices (default %(default)s)")
    p.add_argument("--collectors", type=int, default=2, help="collector processes on a shared subscription (default %(default)s)")
    p.add_argument("--live-rate", type=float, default=5000, help="paced rate for (c), msg/s (default %(default)s)")
    p.add_argument("--live-seconds", type=float, default=10, help="duration of (c) (default %(default)s)")
    p.add_argument("--quick", action="store_true", help="a smaller run (20,000 messages, 5 s live)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    a = p.parse_args(argv)
    if a.quick:
        a.messages, a.live_seconds = 20000, 5
    progress("starting a private Mosquitto and PostgreSQL")
    broker = Broker()
    broker.start()
    pg = PostgresCluster()
    pg.start()
    try:
        db = pg.create_database("bench")
        from collector.migrate import migrate
        migrate(db, log_progress=lambda m: None)
        res = {}
        progress("raw COPY rate")
        res["raw_copy_rows_per_s"] = raw_copy_rate(db)
        progress("(a) raw drain: queueing %d messages" % a.messages)
        make_session(broker.url, "raw-drain")
        res["publish_msgs_per_s"] = preload(broker.url, a.messages, a.devices)
        res["raw_drain_msgs_per_s"] = raw_drain(broker.url, "raw-drain", a.messages)
        progress("(b) collector drain")
        res["ingest_msgs_per_s"], drained = collector_drain(broker, db, a.messages, a.devices, a.collectors)
        res["ingest_ratio"] = res["ingest_msgs_per_s"] / res["raw_drain_msgs_per_s"]
        progress("(c) live load at %.0f msg/s for %.0f s" % (a.live_rate, a.live_seconds))
        (res["live_achieved_msgs_per_s"], res["live_p50_ms"], res["live_p95_ms"], res["live_p99_ms"],
         res["live_samples"]) = live(broker, db, a.live_rate, a.live_seconds, a.collectors)
        progress("(d) waveform blocks")
        res["waveform_samples_per_s"], res["waveform_blocks"], res["wave_bytes_per_axis_sample"] = waveforms(
            broker, db, 400 if a.quick else 2000, 1024)
        res["collectors"] = a.collectors
        res["messages"] = a.messages
        with psycopg.connect(db) as conn:
            rows, keys = conn.execute("SELECT count(*), count(DISTINCT (device_id, boot, seq)) FROM readings").fetchone()
        res["readings_rows"], res["readings_distinct_keys"] = rows, keys
    finally:
        broker.cleanup()
        pg.cleanup()
    if a.json:
        print(json.dumps(res, indent=None, sort_keys=True))
        return 0
    print()
    print("%-52s %14s" % ("measure", "value"))
    print("-" * 67)
    rows = [
        ("raw COPY binary into a bare table, rows/s", res["raw_copy_rows_per_s"]),
        ("publish QoS 1 into the broker, msg/s", res["publish_msgs_per_s"]),
        ("(a) raw drain, bare paho + manual ack, msg/s", res["raw_drain_msgs_per_s"]),
        ("(b) collector drain (%d proc), msg/s" % a.collectors, res["ingest_msgs_per_s"]),
        ("(b)/(a) ratio", res["ingest_ratio"]),
        ("(c) live rate achieved, msg/s", res["live_achieved_msgs_per_s"]),
        ("(c) publish -> confirmed p50, ms", res["live_p50_ms"]),
        ("(c) publish -> confirmed p95, ms", res["live_p95_ms"]),
        ("(c) publish -> confirmed p99, ms", res["live_p99_ms"]),
        ("(d) waveform samples committed/s (axis-samples)", res["waveform_samples_per_s"]),
        ("(d) wave bytes per axis-sample on the wire", res["wave_bytes_per_axis_sample"]),
        ("readings rows / distinct keys", "%d / %d" % (res["readings_rows"], res["readings_distinct_keys"])),
    ]
    for name, v in rows:
        print("%-52s %14s" % (name, ("%.3f" % v if v < 10 else "%.0f" % v) if isinstance(v, float) else v))
    return 0


if __name__ == "__main__":
    sys.exit(main())
