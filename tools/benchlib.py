"""What the benchmarks share: progress lines, number formatting, /proc figures of a
process, the raw QoS 1 publish limit of a bare paho client, and how a run ends."""

import json
import os
import sys
import threading
import time
import uuid

import paho.mqtt.client as paho

from edge_agent.uplink import parse_url


def progress(msg):
    """One progress line on stderr."""
    print("  .. " + msg, file=sys.stderr, flush=True)


def fmt(v):
    """A figure for a table: small floats with 3 decimals, large numbers with thousands separators."""
    if isinstance(v, float):
        return "%.3f" % v if abs(v) < 10 else "{:,.0f}".format(v)
    return "{:,}".format(v) if isinstance(v, int) else str(v)


def table_lines(rows, target_header="target"):
    """[name, value, unit, target] rows as aligned text lines under a header (a blank line first).

    The name column is as wide as the longest name, so a long one does not push its row out of line."""
    width = max([58] + [len(r[0]) for r in rows])
    line = "%%-%ds %%12s %%-10s %%s" % width
    lines = ["", line % ("measure", "value", "unit", target_header), "-" * (width + 42)]
    lines.extend(line % (name, fmt(value), unit, target) for name, value, unit, target in rows)
    return lines


def proc_cpu_s(pid):
    """utime + stime of a process, seconds (/proc/PID/stat fields 14 and 15)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mb(pid):
    """(VmRSS, VmHWM) of a process in MB (2^20 bytes), from /proc/PID/status."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024.0
    return out.get("VmRSS", 0.0), out.get("VmHWM", 0.0)


def proc_smaps_mb(pid):
    """(Pss, private = Private_Clean + Private_Dirty, shared clean file pages) of a process in MB,
    from /proc/PID/smaps_rollup: what RSS is made of."""
    out = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                out[parts[0].rstrip(":")] = int(parts[1]) / 1024.0
    return (out.get("Pss", 0.0), out.get("Private_Clean", 0.0) + out.get("Private_Dirty", 0.0),
            out.get("Shared_Clean", 0.0))


def raw_publish(url, topic, payload, messages, window=100, protocol=paho.MQTTv5, warmup=0):
    """msgs/s of a bare paho client publishing `messages` QoS 1 messages, at most `window`
    un-acknowledged (1: wait for each PUBACK); `warmup` messages are sent first, untimed."""
    host, port, user, password, _tls = parse_url(url)
    c = paho.Client(callback_api_version=paho.CallbackAPIVersion.VERSION2,
                    client_id="bench-raw-%s" % uuid.uuid4().hex[:8], protocol=protocol)
    if user:
        c.username_pw_set(user, password)
    c.max_inflight_messages_set(window)
    slots = threading.Semaphore(window)
    acked, target = [0], [0]
    done = threading.Event()

    def on_publish(client, userdata, mid, reason, properties):
        acked[0] += 1
        slots.release()
        if acked[0] >= target[0]:
            done.set()
    c.on_publish = on_publish
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()

    def burst(n):
        # Every PUBACK of the previous burst has arrived: the counters start afresh.
        acked[0], target[0] = 0, n
        done.clear()
        t0 = time.monotonic()
        for _ in range(n):
            slots.acquire()
            c.publish(topic, payload, qos=1)
        if not done.wait(120):
            raise RuntimeError("raw publish: only %d of %d PUBACKs within 120 s" % (acked[0], n))
        return time.monotonic() - t0

    c.connect(host, port)
    c.loop_start()
    try:
        if not connected.wait(10):
            raise RuntimeError("the raw publisher could not connect to %s" % url)
        if warmup:
            burst(warmup)
        return messages / burst(messages)
    finally:
        c.disconnect()
        c.loop_stop()


def finish(name, run, args, table):
    """Run a benchmark and print its table (or one JSON object); 1 with one line if it cannot run."""
    try:
        res = run(args)
    except Exception as e:  # a benchmark that cannot run says why, in one line
        print("%s: %s: %s" % (name, type(e).__name__, e), file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(res, sort_keys=True))
    else:
        print(table(res))
    return 0
