"""Edge agent benchmark: the outbox and the uplink against the raw broker limit, measured in the same run.

Starts a private Mosquitto (fieldwatch/devservices/broker.py), then measures:
  (a) outbox enqueue: readings/s stored durably by edge_agent.outbox.Outbox
      (WAL, synchronous=FULL: one fsync per append() call), one reading per call
      (as the agent's main loop stores what one pass made) and in batches;
  (b) raw QoS 1 publish: a bare paho client (MQTT 5, inflight 100, at most 100
      un-acknowledged, like the uplink) publishing messages of the drain's size;
  (c) drain: a backlog of readings (default 1,000,000) first stored in the outbox,
      then sent the way the agent sends it (Outbox.next_to_send -> OutboxBatch.payload
      -> edge_agent.uplink.Uplink.publish -> Outbox.mark_sent), unpaced as after a
      `flush` command, until every message is PUBACKed. No collector runs, so the
      drain ends at PUBACK, not at the collector's delivery confirmation (which
      would add the collector's and PostgreSQL's cost: tools/bench_ingest.py);
      nobody subscribes to the telemetry topics in (b) or (c). (b) and (c) run in
      turns, --rounds times (default 5), and the figures are the medians: the
      load of a shared machine drifts within a minute;
  (c') with --with-collector: the same backlog again to the real collector and a
      private PostgreSQL (fieldwatch/devservices), until its delivery confirmations have
      emptied the outbox; fails unless the database holds one row per reading;
  (d) the real `edge-agent run --hardware sim` process sampling the simulated
      ADXL345 at --rate-hz for --cpu-seconds against the same broker: CPU% of one
      core from /proc/PID/stat (utime + stime) and RSS from /proc/PID/status.

The issue's targets are printed beside the figures: drain >= 0.9 x raw,
RSS <= 40 MB, CPU <= 25 % of one core. The machine is shared: figures are noisy.

    python -m fieldwatch.tools.bench_agent                  # full run: 1,000,000-reading backlog
    python -m fieldwatch.tools.bench_agent --with-collector # and (c')
    python -m fieldwatch.tools.bench_agent --quick --json   # smaller, one JSON object on stdout
"""

import argparse
import json
import os
import queue
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import paho.mqtt.client as paho

from edge_agent.keys import KeySource
from edge_agent.outbox import Outbox
from edge_agent.uplink import Uplink, parse_url
from fieldwatch.devservices.broker import Broker
from fieldwatch.tools.benchlib import finish, fmt, proc_cpu_s, proc_rss_mb, proc_smaps_mb, progress, raw_publish, table_lines
from fieldwatch.wire import codec, topics

DEVICE = "bench-agent"
TARGET_RATIO = 0.9
TARGET_RSS_MB = 40.0
TARGET_CPU_PERCENT = 25.0
MB = 1024 * 1024


def reading(i):
    """The i-th benchmark reading: [name, value], a vibration figure as a device would send."""
    return ["vib_rms_g", round(0.05 + (i % 997) * 1e-4, 4)]


def open_outbox(state_dir, max_records):
    """An Outbox with its KeySource, as edge_agent.cli opens them."""
    os.makedirs(state_dir, exist_ok=True)
    path = os.path.join(state_dir, "outbox.db")
    keys = KeySource(state_dir, floor=Outbox.max_boot_in(path))
    return Outbox(path, keys, DEVICE, max_records=max_records)


# ---- (a) ------------------------------------------------------------------------------

def enqueue_rate(state_dir, batch, seconds, max_records):
    """Readings/s stored with append() calls of `batch` readings each, for about `seconds`."""
    ob = open_outbox(state_dir, max_records)
    try:
        ts = int(time.time() * 1000)
        n = 0
        t0 = time.monotonic()
        end = t0 + seconds
        while time.monotonic() < end:
            ob.append("readings", [(ts + n + i, "ntp", reading(n + i)) for i in range(batch)])
            n += batch
        dt = time.monotonic() - t0
    finally:
        ob.close()
    return n / dt, n


def fill_backlog(state_dir, n, chunk=500):
    """Store n readings in a fresh outbox (chunk per transaction); returns readings/s."""
    ob = open_outbox(state_dir, n + 1000)
    try:
        ts = int(time.time() * 1000)
        t0 = time.monotonic()
        last = t0
        for start in range(0, n, chunk):
            k = min(chunk, n - start)
            ob.append("readings", [(ts + start + i, "ntp", reading(start + i)) for i in range(k)])
            if time.monotonic() - last > 5:
                last = time.monotonic()
                progress("backlog: %d of %d readings stored" % (start + k, n))
        dt = time.monotonic() - t0
        assert ob.depth() == n, "the outbox holds %d of %d readings" % (ob.depth(), n)
    finally:
        ob.close()
    return n / dt


# ---- (b) ------------------------------------------------------------------------------

# ---- (c) ------------------------------------------------------------------------------

def drain(url, state_dir, expected, batch_records=500, confirmed=False):
    """Send the outbox's backlog through Uplink; (msgs/s, readings/s, messages, readings).

    Ends when every message is PUBACKed, or with confirmed=True when the collector's delivery
    confirmations have emptied the outbox (applied with Outbox.confirm, as the agent does).
    """
    ob = open_outbox(state_dir, expected + 1000)
    boot = ob.keys.boot
    acks = queue.SimpleQueue()

    def status(state):
        return codec.encode_status(DEVICE, boot, 0, int(time.time() * 1000), "ntp", state, "bench", "bench",
                                   "soft", 0, 0.0, 0)
    up = Uplink(url, DEVICE, status, on_ack=acks.put, on_command=lambda payload, retained: None, max_unacked=100)
    up.start()
    try:
        if not up.wait_connected(10):
            raise RuntimeError("the uplink could not connect to %s" % url)
        ob.rewind()   # as the agent does on a new connection: everything is backlog now
        topic = topics.topic(DEVICE, "readings")
        messages = readings = 0
        last = t0 = time.monotonic()
        end = t0 + 600 + expected / 1000.0

        def apply_acks():
            ranges = []
            while not acks.empty():
                ranges.extend(acks.get())
            if ranges:
                ob.confirm(ranges)
        while True:
            if confirmed:
                apply_acks()
            if time.monotonic() - last > 5:
                last = time.monotonic()
                progress("drain: %d of %d readings published%s" % (
                    readings, expected, ", %d confirmed" % (expected - ob.depth()) if confirmed else ""))
            if time.monotonic() > end:
                raise RuntimeError("the drain did not finish in %.0f s" % (end - t0))
            if not up.connected:
                raise RuntimeError("the uplink lost its connection during the drain")
            if not up.wait_can_publish(0.005):
                continue
            batch = ob.next_to_send(max_records=batch_records, backlog_records=None)
            if batch is None:
                if confirmed and ob.depth():
                    time.sleep(0.0005)    # all sent: wait for the confirmations
                    continue
                break
            payload = batch.payload(DEVICE)
            if not up.publish(topic, payload):
                continue
            ob.mark_sent(batch)
            messages += 1
            readings += len(batch)
        while up.unacked:
            if not up.connected:
                raise RuntimeError("the uplink lost its connection before the last PUBACKs")
            time.sleep(0.0005)
        dt = time.monotonic() - t0
    finally:
        up.stop(None)
        ob.close()
    if readings < expected:
        raise RuntimeError("drained %d readings, the backlog held %d" % (readings, expected))
    return messages / dt, readings / dt, messages, readings


def full_batch_payload(state_dir, batch_records=500):
    """The payload of a full readings batch, for the raw publisher to send messages of the drain's size."""
    ob = open_outbox(state_dir, batch_records + 10)
    try:
        ts = int(time.time() * 1000)
        ob.append("readings", [(ts + i, "ntp", reading(i)) for i in range(batch_records)])
        ob.rewind()
        return ob.next_to_send(max_records=batch_records).payload(DEVICE)
    finally:
        ob.close()


def confirmed_drain(broker, state_dir, expected, batch_records):
    """(c') the same backlog again, now to the real collector with a private PostgreSQL, until confirmed."""
    from fieldwatch.devservices.collector import CollectorProcess, count_keys
    from fieldwatch.devservices.postgres import PostgresCluster

    progress("(c') starting a private PostgreSQL and the collector")
    pg = PostgresCluster()
    collector = None
    try:
        pg.start()
        db = pg.create_database("bench_agent")
        collector = CollectorProcess(broker.url, db, client_id="bench-agent-collector").start(timeout=60)
        progress("(c') draining the backlog again, until the collector's confirmations empty the outbox")
        msgs_s, _, messages, sent = drain(broker.url, state_dir, expected, batch_records, confirmed=True)
        rows, keys = count_keys(db, "readings")
        if rows != expected or keys != expected:
            raise RuntimeError("the database holds %d rows, %d distinct keys; the backlog held %d" % (rows, keys, expected))
    finally:
        if collector is not None:
            collector.terminate()
            os.unlink(collector.log.name)
        pg.cleanup()
    dt = messages / msgs_s
    return {"drain_confirmed_msgs_per_s": msgs_s, "drain_confirmed_readings_per_s": expected / dt,
            "drain_confirmed_resent_readings": sent - expected, "drain_confirmed_db_rows": rows}


# ---- (d) ------------------------------------------------------------------------------

def agent_load(url, state_dir, rate_hz, seconds, startup_timeout=60):
    """Run the real agent on the simulated chip; (cpu % of one core, RSS MB, peak RSS MB, fifo overruns, windows)."""
    exe = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "edge-agent")
    cmd = [exe] if os.access(exe, os.X_OK) else [sys.executable, "-m", "edge_agent.cli"]
    notify_name = "fw-bench-agent-%s" % uuid.uuid4().hex
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + notify_name)
    env = dict(os.environ, MQTT_URL=url, NOTIFY_SOCKET="@" + notify_name,
               EDGE_AGENT_SENSOR_RATE_HZ=str(rate_hz), EDGE_AGENT_OUTBOX_EXIT_DRAIN_S="0",
               EDGE_AGENT_STATUS_INTERVAL_S="1")
    env.pop("WATCHDOG_USEC", None)
    env.pop("WATCHDOG_PID", None)
    statuses = []
    sub = paho.Client(callback_api_version=paho.CallbackAPIVersion.VERSION2,
                      client_id="bench-status-%s" % uuid.uuid4().hex[:8], protocol=paho.MQTTv5)
    sub.on_message = lambda client, userdata, m: statuses.append(m.payload)
    host, port = parse_url(url)[:2]
    sub.connect(host, port)
    sub.subscribe(topics.topic(DEVICE + "-cpu", "status"), qos=1)
    sub.loop_start()
    log = tempfile.NamedTemporaryFile(prefix="bench-agent-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd + ["run", "--device-id", DEVICE + "-cpu", "--hardware", "sim", "--state-dir", state_dir],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        sock.settimeout(startup_timeout)
        try:
            while b"READY=1" not in sock.recv(4096):
                pass
        except socket.timeout:
            raise RuntimeError("the agent did not report READY=1 within %d s; its log: %s" % (startup_timeout, log.name))
        time.sleep(min(2.0, seconds / 2))   # settle: first windows, first connection
        c0, t0 = proc_cpu_s(proc.pid), time.monotonic()
        peak_rss = 0.0
        while time.monotonic() - t0 < seconds:
            if proc.poll() is not None:
                raise RuntimeError("the agent exited (%s) during the measurement; its log: %s" % (proc.returncode, log.name))
            peak_rss = max(peak_rss, proc_rss_mb(proc.pid)[0])
            time.sleep(0.25)
        c1, t1 = proc_cpu_s(proc.pid), time.monotonic()
        rss, hwm = proc_rss_mb(proc.pid)
        pss, private, shared = proc_smaps_mb(proc.pid)
        proc.terminate()
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        sock.close()
        time.sleep(0.2)
        sub.loop_stop()
        sub.disconnect()
    health = {}
    for payload in statuses:
        try:
            health = json.loads(payload).get("health", health)
        except ValueError:
            pass
    os.unlink(log.name)
    return (100.0 * (c1 - c0) / (t1 - t0), max(rss, peak_rss), hwm, health.get("fifo_overruns"),
            health.get("windows"), pss, private, shared)


# ---- the run ---------------------------------------------------------------------------

def run(args):
    """All measurements; returns the result dict."""
    res = {}
    work = tempfile.mkdtemp(prefix="fw-bench-agent-")
    broker = Broker()
    try:
        broker.start()
        progress("broker %s, work dir %s" % (broker.url, work))

        progress("(a) outbox enqueue, one reading per call, %.0f s" % args.enqueue_seconds)
        res["outbox_enqueue_per_s"], _ = enqueue_rate(os.path.join(work, "a1"), 1, args.enqueue_seconds, 10 ** 7)
        progress("(a) outbox enqueue, %d readings per call, %.0f s" % (args.enqueue_batch, args.enqueue_seconds))
        res["outbox_enqueue_batched_per_s"], _ = enqueue_rate(os.path.join(work, "a2"), args.enqueue_batch,
                                                              args.enqueue_seconds, 10 ** 7)
        res["outbox_enqueue_batch"] = args.enqueue_batch
        shutil.rmtree(os.path.join(work, "a1"), ignore_errors=True)
        shutil.rmtree(os.path.join(work, "a2"), ignore_errors=True)

        payload = full_batch_payload(os.path.join(work, "p"), args.batch_records)
        res["message_bytes"] = len(payload)
        single = codec.encode_readings("bench-raw", 1, 0, int(time.time() * 1000), "ntp", [[0] + reading(0)])
        res["raw_single_message_bytes"] = len(single)
        progress("(b) raw QoS 1 publish: %d messages of one reading (%d bytes), for comparison"
                 % (args.raw_messages, len(single)))
        res["raw_single_publish_msgs_per_s"] = raw_publish(broker.url, topics.topic("bench-raw", "readings"), single, args.raw_messages)

        progress("(c) storing a backlog of %d readings" % args.backlog)
        res["backlog_fill_readings_per_s"] = fill_backlog(os.path.join(work, "c"), args.backlog)
        # (b) and (c) take turns, --rounds times: the machine's load drifts, and a ratio of
        # two figures measured a minute apart would mostly measure the drift. Without
        # confirmations the backlog stays in the outbox, so every round drains all of it.
        raws, drains = [], []
        for r in range(args.rounds):
            progress("round %d of %d: (b) raw QoS 1 publish, %d messages of %d bytes"
                     % (r + 1, args.rounds, args.raw_messages, len(payload)))
            raws.append(raw_publish(broker.url, topics.topic("bench-raw", "readings"), payload, args.raw_messages))
            progress("round %d of %d: (c) draining the backlog through the uplink" % (r + 1, args.rounds))
            drains.append(drain(broker.url, os.path.join(work, "c"), args.backlog, args.batch_records))
        res["rounds"] = [{"raw_publish_msgs_per_s": a, "drain_msgs_per_s": d[0], "drain_ratio": d[0] / a}
                         for a, d in zip(raws, drains)]
        res["raw_publish_msgs_per_s"] = statistics.median(raws)
        res["raw_publish_readings_per_s"] = res["raw_publish_msgs_per_s"] * args.batch_records
        res["drain_msgs_per_s"] = statistics.median(d[0] for d in drains)
        res["drain_readings_per_s"] = statistics.median(d[1] for d in drains)
        res["drain_messages"], res["drain_readings"] = drains[0][2], drains[0][3]
        res["drain_ratio"] = statistics.median(r["drain_ratio"] for r in res["rounds"])
        res["backlog_readings"] = args.backlog
        if args.with_collector:
            res.update(confirmed_drain(broker, os.path.join(work, "c"), args.backlog, args.batch_records))
        shutil.rmtree(os.path.join(work, "c"), ignore_errors=True)

        progress("(d) edge-agent on the simulated chip at %s Hz for %.0f s" % (args.rate_hz, args.cpu_seconds))
        (res["cpu_percent"], res["rss_mb"], res["rss_peak_mb"], res["agent_fifo_overruns"],
         res["agent_windows"], res["pss_mb"], res["private_mb"], res["shared_clean_mb"]) = agent_load(broker.url, os.path.join(work, "d"), args.rate_hz, args.cpu_seconds)
        res["agent_rate_hz"] = args.rate_hz
        res["agent_seconds"] = args.cpu_seconds
    finally:
        broker.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    res["targets"] = {"drain_ratio_min": TARGET_RATIO, "rss_mb_max": TARGET_RSS_MB,
                      "cpu_percent_max": TARGET_CPU_PERCENT}
    return res


def table(res):
    """The result as a text table, targets beside the figures."""
    def verdict(ok):
        return "met" if ok else "NOT met"
    med = " (median)" if len(res["rounds"]) > 1 else ""
    rows = [
        ("(a) outbox enqueue, 1 reading per durable commit", res["outbox_enqueue_per_s"], "readings/s", ""),
        ("(a) outbox enqueue, %d readings per durable commit" % res["outbox_enqueue_batch"],
         res["outbox_enqueue_batched_per_s"], "readings/s", ""),
        ("(b) raw QoS 1 publish, bare paho (%s B messages)%s" % (fmt(res["message_bytes"]), med),
         res["raw_publish_msgs_per_s"], "msgs/s", ""),
        ("(b) the same, one reading per message (%s B), for comparison" % fmt(res["raw_single_message_bytes"]),
         res["raw_single_publish_msgs_per_s"], "msgs/s", ""),
        ("(c) backlog stored (500 readings per commit)", res["backlog_fill_readings_per_s"], "readings/s", ""),
        ("(c) drain outbox -> uplink -> PUBACK (no collector ack)%s" % med, res["drain_msgs_per_s"], "msgs/s", ""),
        ("(c)   the same in readings (%s readings, %s msgs)" % (fmt(res["drain_readings"]),
                                                              fmt(res["drain_messages"])),
         res["drain_readings_per_s"], "readings/s", ""),
        *([("(c') drain to collector + PostgreSQL until confirmed", res["drain_confirmed_msgs_per_s"], "msgs/s", ""),
            ("(c')   in readings (%s rows stored, %s resent)" % (fmt(res["drain_confirmed_db_rows"]),
                                                               fmt(res["drain_confirmed_resent_readings"])),
             res["drain_confirmed_readings_per_s"], "readings/s", "")]
          if "drain_confirmed_msgs_per_s" in res else []),
        ("(c) drain / raw (msgs/s, same message size)%s" % med, res["drain_ratio"], "x",
         ">= %.1f: %s" % (TARGET_RATIO, verdict(res["drain_ratio"] >= TARGET_RATIO))),
        ("(d) agent CPU at %s Hz, %g s (one core = 100)" % (fmt(res["agent_rate_hz"]), res["agent_seconds"]),
         res["cpu_percent"], "%", "<= %.0f: %s" % (TARGET_CPU_PERCENT, verdict(res["cpu_percent"] <= TARGET_CPU_PERCENT))),
        ("(d) agent RSS", res["rss_mb"], "MB", "<= %.0f: %s" % (TARGET_RSS_MB, verdict(res["rss_mb"] <= TARGET_RSS_MB))),
        ("(d) agent peak RSS (VmHWM)", res["rss_peak_mb"], "MB", ""),
        ("(d)   of RSS: private / shared clean (libraries) / PSS", "%s / %s / %s" % (
            fmt(res["private_mb"]), fmt(res["shared_clean_mb"]), fmt(res["pss_mb"])), "MB", ""),
        ("(d) agent FIFO overruns / feature windows", "%s / %s" % (res["agent_fifo_overruns"], res["agent_windows"]),
         "", ""),
    ]
    lines = table_lines(rows)
    lines.append("")
    if len(res["rounds"]) > 1:
        lines.append("(b) and (c) ran in turns; each round's raw and drain msgs/s and their ratio:")
        lines.append("    " + "; ".join("%s, %s, %.2f" % (fmt(r["raw_publish_msgs_per_s"]), fmt(r["drain_msgs_per_s"]),
                                                      r["drain_ratio"]) for r in res["rounds"]))
    lines.append("(c) ends at the broker's PUBACK: no collector runs, so the collector's delivery confirmation")
    lines.append("    is not part of it%s. Unpaced, as after `flush`;" % (
        " ((c') is: --with-collector)" if "drain_confirmed_msgs_per_s" in res else " (add it with --with-collector)"))
    lines.append("    the agent paces backlog at outbox.backlog_records_per_s behind live data.")
    return "\n".join(lines)


def main(argv=None):
    """Entry point: parse options, run, print a table (or --json)."""
    p = argparse.ArgumentParser(prog="python -m fieldwatch.tools.bench_agent", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backlog", type=int, help="readings in the backlog for (c) (default 1,000,000; --quick 20,000)")
    p.add_argument("--batch-records", type=int, default=500,
                   help="readings per message, as outbox.batch_records (default %(default)s, the contract's limit)")
    p.add_argument("--raw-messages", type=int, help="messages for (b), per round (default 4,000; --quick 500)")
    p.add_argument("--rounds", type=int, help="rounds of (b) then (c); figures are medians (default 5; --quick 1)")
    p.add_argument("--enqueue-seconds", type=float, help="duration of each (a) run, s (default 5; --quick 1)")
    p.add_argument("--enqueue-batch", type=int, default=100, help="readings per call in the batched (a) run (default %(default)s)")
    p.add_argument("--rate-hz", type=float, default=1600,
                   help="simulated ADXL345 rate for (d), Hz (default %(default)s: the lowest ADXL345 rate at or "
                        "above 1 kHz)")
    p.add_argument("--cpu-seconds", type=float, help="duration of (d), s (default 20; --quick 3)")
    p.add_argument("--with-collector", action="store_true",
                   help="(c') also drain the backlog to the real collector with a private PostgreSQL, until its "
                        "delivery confirmations empty the outbox; checks every reading is stored once")
    p.add_argument("--quick", action="store_true", help="a small run (about 15 s) for smoke tests")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    args = p.parse_args(argv)
    q = args.quick
    for name, full, quick in (("backlog", 1000000, 20000), ("raw_messages", 4000, 500), ("rounds", 5, 1),
                              ("enqueue_seconds", 5.0, 1.0), ("cpu_seconds", 20.0, 3.0)):
        if getattr(args, name) is None:
            setattr(args, name, quick if q else full)
    problems = []
    if args.backlog < 1:
        problems.append("--backlog must be at least 1")
    if not 1 <= args.batch_records <= codec.MAX_RECORDS:
        problems.append("--batch-records must be 1..%d (the wire contract's limit)" % codec.MAX_RECORDS)
    if args.raw_messages < 1 or args.enqueue_batch < 1 or args.rounds < 1:
        problems.append("--raw-messages, --rounds and --enqueue-batch must be at least 1")
    if args.enqueue_seconds <= 0 or args.cpu_seconds <= 0:
        problems.append("--enqueue-seconds and --cpu-seconds must be above 0")
    if args.rate_hz not in codec.ADXL_RATES_HZ:
        problems.append("--rate-hz %s is not an ADXL345 rate; one of %s" % (
            args.rate_hz, ", ".join(str(r) for r in codec.ADXL_RATES_HZ)))
    if problems:
        p.error("; ".join(problems))
    args.rate_hz = int(args.rate_hz) if float(args.rate_hz).is_integer() else args.rate_hz
    return finish("bench_agent", run, args, table)


if __name__ == "__main__":
    sys.exit(main())
