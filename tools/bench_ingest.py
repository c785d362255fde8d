"""Ingest benchmark: the collector against the raw limits, measured in the same run.

Starts a private Mosquitto and PostgreSQL (fieldwatch/devservices), then measures:
  (a) raw drain: a bare paho subscriber (MQTT 5, manual ack, no database)
      draining a queued backlog of single-reading messages; beside it the same
      drain through the collector's own tuned MQTT client (no database), the
      ceiling of the collector's transport;
  (b) collector drain: the same backlog drained by N collector processes on a
      shared subscription (validation, COPY, dedupe, ack after commit):
      msg/s, ratio to (a), and the collectors' CPU time per message;
  (c) live load at a paced rate: latency from the publisher's timestamp in the
      payload (wall clock, ms) to the commit of the row (PostgreSQL's commit
      timestamp, track_commit_timestamp = on): same machine, same clock.
      p50/p95/p99, the rate the publisher actually achieved (PUBACKs from the
      broker per second), and the part of the latency spent before the
      collector received the message (payload time -> receipt time);
  (d) waveform blocks: accelerometer samples committed per second;
  plus the raw COPY rate of the database (binary COPY into a bare table) and
  the rate at which the backlog could be published.

Drain rates are measured from the first message received to the last one
acknowledged (raw) or committed (collector, from the rows' receipt and commit
times), so process start-up is not counted on either side.

    python -m fieldwatch.tools.bench_ingest                 # full run (~2-3 minutes)
    python -m fieldwatch.tools.bench_ingest --quick --json  # smaller, one JSON object
"""

import argparse
import json
import os
import random
import sys
import threading
import time

import paho.mqtt.client as paho
import psycopg
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from collector import mqtt as collector_mqtt
from fieldwatch.devservices.broker import Broker
from fieldwatch.devservices.collector import CollectorProcess, wait_rows
from fieldwatch.devservices.postgres import PostgresCluster
from fieldwatch.tools.benchlib import proc_cpu_s, progress
from fieldwatch.tools.loadgen import ConfirmingPublisher, FastPublisher, reading_payload
from fieldwatch.wire import codec, topics

PACE_S = 0.002   # the live publisher sleeps once it is this far ahead of its schedule

# Keys `--json` always carries (the benchmark's contract with its smoke test and CI).
JSON_KEYS = ("raw_drain_msgs_per_s", "ingest_msgs_per_s", "ingest_ratio", "live_p50_ms", "live_p95_ms",
             "live_p99_ms", "waveform_samples_per_s")


def _host_port(url):
    host, port = url.split("//")[1].split(":")
    return host, int(port)


def preload(url, n, devices, boot=1, client_id=None):
    """Queue n single-reading messages from `devices` devices; return msgs/s of the publish."""
    window = 20000
    pub = ConfirmingPublisher(url, client_id or "bench-pub-%d" % random.randrange(1 << 30), max_unacked=window)
    pub.start()
    devs = ["bench-%03d" % i for i in range(devices)]
    now = int(time.time() * 1000)
    t0 = time.monotonic()
    for i in range(n):
        dev, seq = devs[i % devices], i // devices
        pub.send(dev, "readings", boot, seq, seq, reading_payload(dev, boot, seq, now + seq))
    for _ in range(window):      # every PUBACK back: the broker holds them all for the subscribers
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
    c.connect(*_host_port(url), clean_start=False, properties=props)
    c.loop_start()
    c.subscribe([(f, 1) for f in topics.COLLECTOR_FILTERS])
    time.sleep(0.5)
    c.disconnect()
    c.loop_stop()


def drop_session(url, client_id):
    """Remove a persistent session, so the broker stops queueing later phases' messages for it."""
    c = paho.Client(callback_api_version=paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                    protocol=paho.MQTTv5)
    c.connect(*_host_port(url), clean_start=True)   # session expiry 0: gone at disconnect
    c.loop_start()
    time.sleep(0.2)
    c.disconnect()
    c.loop_stop()


def raw_drain(url, client_id, n):
    """Bare paho subscriber acking each message in on_message; (msgs/s, CPU us per message)."""
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
    return _drain(c, url, n, got, first, done)


def tuned_drain(url, client_id, n, ack_every=500):
    """The collector's MQTT client (read-ahead, lean decode, batched PUBACKs), no database."""
    got = [0]
    done = threading.Event()
    first = [None]
    mids = []

    def on_publish_received(topic, mid, qos, retain, payload):
        if first[0] is None:
            first[0] = time.monotonic()
        collector_mqtt.Message(topic, payload, mid, qos, retain, int(time.time() * 1000), 1)
        mids.append(mid)
        got[0] += 1
        if len(mids) >= ack_every or got[0] >= n:
            c.ack_many(mids)
            mids.clear()
        if got[0] >= n:
            done.set()
    c = collector_mqtt._Client(callback_api_version=paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                               protocol=paho.MQTTv5, manual_ack=True)
    c.on_publish_received = on_publish_received
    return _drain(c, url, n, got, first, done)


def _drain(c, url, n, got, first, done):
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 3600
    props.ReceiveMaximum = 2000
    cpu0 = time.process_time()
    c.connect(*_host_port(url), clean_start=False, properties=props)
    c.loop_start()
    done.wait(600)
    t1 = time.monotonic()
    cpu = time.process_time() - cpu0
    c.disconnect()
    c.loop_stop()
    drop_session(url, c._client_id.decode())
    if got[0] < n:
        raise RuntimeError("drain stopped after %d of %d messages" % (got[0], n))
    return (n - 1) / (t1 - first[0]), cpu / n * 1e6


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


def collector_drain(broker, db_url, n, devices, collectors, batch_max=None, batch_age_ms=None):
    """Queue n messages for a shared-subscription group, then time the collectors draining them.

    Returns (msgs/s from the first receipt to the last commit, collector CPU us per message).
    """
    group = "bench%d" % random.randrange(1 << 20)
    procs = [CollectorProcess(broker.url, db_url, client_id="%s-coll-%d" % (group, i), share_group=group,
                              batch_max=batch_max, batch_age_ms=batch_age_ms) for i in range(collectors)]
    idle_cpu = []
    for p in procs:        # create the sessions and shared subscriptions, then leave
        p.start()
        idle_cpu.append(proc_cpu_s(p.proc.pid))   # start-up: imports, migrations, connect
    for p in procs:
        p.terminate()
    boot = random.randrange(1000, 1 << 30)
    rate_pub = preload(broker.url, n, devices, boot=boot)
    progress("backlog of %d queued (publish %.0f msg/s); draining with %d collector(s)" % (n, rate_pub, collectors))
    with psycopg.connect(db_url) as conn:
        base = conn.execute("SELECT count(*) FROM readings").fetchone()[0]
    for p in procs:
        p.start(wait=False)
    got = wait_rows(db_url, base + n, timeout=900)
    cpu = sum(proc_cpu_s(p.proc.pid) for p in procs) - sum(idle_cpu)
    for p in procs:
        p.terminate()
        drop_session(broker.url, p.env["COLLECTOR_MQTT_CLIENT_ID"])
    if got < base + n:
        raise RuntimeError("collectors stored %d of %d messages" % (got - base, n))
    with psycopg.connect(db_url) as conn:
        span = conn.execute(
            "SELECT extract(epoch FROM max(pg_xact_commit_timestamp(xmin)) - min(recv_ts)) FROM readings"
            " WHERE boot = %s", (boot,)).fetchone()[0]
    return n / float(span), cpu / n * 1e6


def live(broker, db_url, rate, seconds, collectors, devices=50, batch_max=None, batch_age_ms=None):
    """Paced QoS 1 publishing; latency from each payload's timestamp to its row's commit.

    The publisher stamps t0 = wall-clock ms just before queueing each message
    and sends every PACE_S; PostgreSQL's commit timestamp of the row's
    transaction is the end point (same machine, same clock). The achieved rate
    is counted at the broker: PUBACKs received per second, not publish calls.
    """
    group = "live%d" % random.randrange(1 << 20)   # a group of its own: no earlier session shares the stream
    procs = [CollectorProcess(broker.url, db_url, client_id="%s-coll-%d" % (group, i), share_group=group,
                              batch_max=batch_max, batch_age_ms=batch_age_ms) for i in range(collectors)]
    for p in procs:
        p.start()
    time.sleep(0.5)   # the shared subscription is made in on_connect: let its SUBACK land
    pub = FastPublisher(broker.url, "live-pub")
    pub.start()
    boot = random.randrange(1000, 1 << 30)
    devs = ["live-%03d" % i for i in range(devices)]
    names = [topics.topic(d, "readings") for d in devs]
    n = int(rate * seconds)
    pending = []
    t0 = time.monotonic()
    for i in range(n):
        k, seq = i % devices, i // devices
        pending.append((names[k], reading_payload(devs[k], boot, seq, int(time.time() * 1000))))
        ahead = (i + 1) / rate - (time.monotonic() - t0)
        if ahead > 0 or len(pending) >= 100:
            pub.publish_many(pending)
            pending = []
            if ahead > PACE_S:       # sleep in steps of a few ms: a sleep costs more than a publish
                time.sleep(ahead)
    pub.publish_many(pending)
    acked = pub.wait_acked(n, 60)
    achieved = n / (pub.last_ack - t0) if acked else pub.acked / (time.monotonic() - t0)
    pub.stop()
    stored = wait_rows_where(db_url, n, boot, timeout=60)
    for p in procs:
        p.terminate()
        drop_session(broker.url, p.env["COLLECTOR_MQTT_CLIENT_ID"])
    if not acked or stored != n:
        raise RuntimeError("live run: %d of %d messages accepted by the broker, %d stored" % (pub.acked, n, stored))
    with psycopg.connect(db_url) as conn:
        p50, p95, p99 = conn.execute(
            "SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP "
            "(ORDER BY extract(epoch FROM pg_xact_commit_timestamp(xmin) - ts) * 1000) FROM readings"
            " WHERE boot = %s", (boot,)).fetchone()[0]
        r50, r95, r99 = conn.execute(
            "SELECT percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP "
            "(ORDER BY extract(epoch FROM recv_ts - ts) * 1000) FROM readings WHERE boot = %s", (boot,)).fetchone()[0]
    return {"live_achieved_msgs_per_s": achieved, "live_p50_ms": p50, "live_p95_ms": p95, "live_p99_ms": p99,
            "live_samples": stored, "live_to_receipt_p50_ms": r50, "live_to_receipt_p95_ms": r95,
            "live_to_receipt_p99_ms": r99}


def wait_rows_where(db_url, n, boot, timeout):
    """Wait until n readings of this boot are stored; return how many are."""
    end = time.monotonic() + timeout
    with psycopg.connect(db_url, autocommit=True) as conn:
        while True:
            got = conn.execute("SELECT count(*) FROM readings WHERE boot = %s", (boot,)).fetchone()[0]
            if got >= n or time.monotonic() > end:
                return got
            time.sleep(0.1)


def waveforms(broker, db_url, blocks, n_per_axis, batch_max=None, batch_age_ms=None):
    """Publish waveform blocks and time their commit; samples (per axis x axes) per second."""
    c = CollectorProcess(broker.url, db_url, client_id="wave-coll", batch_max=batch_max,
                         batch_age_ms=batch_age_ms).start()
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


def run(a):
    """All measurements; a dict of figures."""
    progress("starting a private Mosquitto and PostgreSQL (track_commit_timestamp = on)")
    broker = Broker()
    broker.start()
    pg = PostgresCluster(settings={"track_commit_timestamp": "on"})
    pg.start()
    try:
        db = pg.create_database("bench")
        from collector.migrate import migrate
        migrate(db, log_progress=lambda m: None)
        res = {"collectors": a.collectors, "messages": a.messages, "cpus": os.cpu_count(),
               "load_avg_1m_at_start": os.getloadavg()[0]}
        progress("raw COPY rate")
        res["raw_copy_rows_per_s"] = raw_copy_rate(db, min(300000, max(10000, a.messages)))
        progress("(a) raw drain: queueing %d messages" % a.messages)
        make_session(broker.url, "raw-drain")
        res["publish_msgs_per_s"] = preload(broker.url, a.messages, a.devices)
        res["raw_drain_msgs_per_s"], res["raw_drain_cpu_us_per_msg"] = raw_drain(broker.url, "raw-drain", a.messages)
        progress("(a') tuned client drain, no database")
        make_session(broker.url, "tuned-drain")
        preload(broker.url, a.messages, a.devices)
        res["tuned_drain_msgs_per_s"], res["tuned_drain_cpu_us_per_msg"] = tuned_drain(
            broker.url, "tuned-drain", a.messages)
        progress("(b) collector drain")
        res["ingest_msgs_per_s"], res["ingest_cpu_us_per_msg"] = collector_drain(
            broker, db, a.messages, a.devices, a.collectors, a.batch_max, a.batch_age_ms)
        res["ingest_ratio"] = res["ingest_msgs_per_s"] / res["raw_drain_msgs_per_s"]
        progress("(c) live load at %.0f msg/s for %.0f s" % (a.live_rate, a.live_seconds))
        res.update(live(broker, db, a.live_rate, a.live_seconds, a.collectors, a.devices, a.batch_max, a.batch_age_ms))
        progress("(d) waveform blocks")
        res["waveform_samples_per_s"], res["waveform_blocks"], res["wave_bytes_per_axis_sample"] = waveforms(
            broker, db, a.wave_blocks, 1024, a.batch_max, a.batch_age_ms)
        with psycopg.connect(db) as conn:
            rows, keys = conn.execute("SELECT count(*), count(DISTINCT (device_id, boot, seq)) FROM readings").fetchone()
        res["readings_rows"], res["readings_distinct_keys"] = rows, keys
        res["load_avg_1m_at_end"] = os.getloadavg()[0]
        return res
    finally:
        broker.cleanup()
        pg.cleanup()


def table(res, a):
    """The human-readable report."""
    warn = ""
    if res["live_achieved_msgs_per_s"] < 0.95 * a.live_rate:
        warn = "  (publisher fell short of %.0f)" % a.live_rate
    rows = [
        ("raw COPY binary into a bare table, rows/s", res["raw_copy_rows_per_s"]),
        ("publish QoS 1 into the broker, msg/s", res["publish_msgs_per_s"]),
        ("(a) raw drain, bare paho + manual ack, msg/s", res["raw_drain_msgs_per_s"]),
        ("(a)   its CPU, us/msg", res["raw_drain_cpu_us_per_msg"]),
        ("(a') collector's MQTT client, no DB, msg/s", res["tuned_drain_msgs_per_s"]),
        ("(a')  its CPU, us/msg", res["tuned_drain_cpu_us_per_msg"]),
        ("(b) collector drain (%d proc), msg/s" % a.collectors, res["ingest_msgs_per_s"]),
        ("(b)   collectors' CPU, us/msg", res["ingest_cpu_us_per_msg"]),
        ("(b)/(a) ratio", res["ingest_ratio"]),
        ("(b)/(a') ratio", res["ingest_msgs_per_s"] / res["tuned_drain_msgs_per_s"]),
        ("(c) live rate achieved, msg/s" + warn, res["live_achieved_msgs_per_s"]),
        ("(c) payload time -> commit p50, ms", res["live_p50_ms"]),
        ("(c) payload time -> commit p95, ms", res["live_p95_ms"]),
        ("(c) payload time -> commit p99, ms", res["live_p99_ms"]),
        ("(c)   of which payload time -> receipt p50/p95/p99, ms",
         "%.0f/%.0f/%.0f" % (res["live_to_receipt_p50_ms"], res["live_to_receipt_p95_ms"], res["live_to_receipt_p99_ms"])),
        ("(d) waveform samples committed/s (axis-samples)", res["waveform_samples_per_s"]),
        ("(d) wave bytes per axis-sample on the wire", res["wave_bytes_per_axis_sample"]),
        ("readings rows / distinct keys", "%d / %d" % (res["readings_rows"], res["readings_distinct_keys"])),
        ("load average (1 min) at start / end, %d CPUs" % res["cpus"],
         "%.2f / %.2f" % (res["load_avg_1m_at_start"], res["load_avg_1m_at_end"])),
    ]
    out = ["", "%-58s %14s" % ("measure", "value"), "-" * 73]
    for name, v in rows:
        out.append("%-58s %14s" % (name, ("%.3f" % v if v < 10 else "%.0f" % v) if isinstance(v, float) else v))
    return "\n".join(out)


def main(argv=None):
    """Run the benchmark and print a table (or one JSON object)."""
    p = argparse.ArgumentParser(prog="python -m fieldwatch.tools.bench_ingest", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--messages", type=int, default=200000, help="backlog size for (a) and (b) (default %(default)s)")
    p.add_argument("--devices", type=int, default=50, help="simulated devices (default %(default)s)")
    p.add_argument("--collectors", type=int, default=2, help="collector processes on a shared subscription (default %(default)s)")
    p.add_argument("--live-rate", type=float, default=5000, help="paced rate for (c), msg/s (default %(default)s)")
    p.add_argument("--live-seconds", type=float, default=10, help="duration of (c) (default %(default)s)")
    p.add_argument("--wave-blocks", type=int, default=2000, help="waveform blocks of 3 x 1024 samples for (d) (default %(default)s)")
    p.add_argument("--batch-max", type=int, default=None, help="collector ingest.batch_max (default: the collector's)")
    p.add_argument("--batch-age-ms", type=int, default=None, help="collector ingest.batch_age_ms (default: the collector's)")
    p.add_argument("--quick", action="store_true", help="a smaller run (20,000 messages, 5 s live, 400 blocks)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    a = p.parse_args(argv)
    if a.quick:
        a.messages, a.live_seconds, a.wave_blocks = 20000, 5, 400
    for name in ("messages", "devices", "collectors", "wave_blocks"):
        if getattr(a, name) < 1:
            p.error("--%s must be at least 1" % name.replace("_", "-"))
    for name in ("batch_max", "batch_age_ms"):
        if getattr(a, name) is not None and getattr(a, name) < 1:
            p.error("--%s must be at least 1" % name.replace("_", "-"))
    if a.live_rate <= 0 or a.live_seconds <= 0:
        p.error("--live-rate and --live-seconds must be positive")
    if a.live_rate * a.live_seconds < 1:
        p.error("--live-rate x --live-seconds must give at least one message")
    try:
        res = run(a)
    except RuntimeError as e:
        print("bench_ingest: %s" % e, file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps(res, indent=None, sort_keys=True))
    else:
        print(table(res, a))
    return 0


if __name__ == "__main__":
    sys.exit(main())
