"""The edge agent's record keys and SQLite outbox: keys, batching, confirmation, resend, bounds, crashes."""

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time

import pytest

from edge_agent import keys as keys_mod
from edge_agent.keys import KeySource
from edge_agent.outbox import Outbox
from fieldwatch.wire import codec, topics

DEV = "pump-07"
T0 = 1751327990000


class Clock:
    """A wall clock the test moves by hand."""

    def __init__(self, t=1751327990.0):
        self.t = t

    def __call__(self):
        return self.t


def readings(n, t=T0, tq="ntp", name="temp_c"):
    return [(t + i, tq, [name, 20.0 + i]) for i in range(n)]


def drain(box, **kw):
    """Every batch next_to_send hands out (marking each sent), in order."""
    out = []
    while True:
        b = box.next_to_send(**kw)
        if b is None:
            return out
        box.mark_sent(b)
        out.append(b)


@pytest.fixture
def state(tmp_path):
    return str(tmp_path / "state")


@pytest.fixture
def clock():
    return Clock()


def open_box(state, clock=None, **kw):
    ks = KeySource(state, floor=Outbox.max_boot_in(os.path.join(state, "outbox.db")))
    return Outbox(os.path.join(state, "outbox.db"), ks, kw.pop("dev", DEV), clock=clock or time.time, **kw)


# ---- keys ------------------------------------------------------------------------

def test_keys_boot_increments_once_per_start_and_seq_counts_from_zero(state):
    a = KeySource(state)
    assert a.first_start and a.take(3) == (a.boot, 0) and a.take(2) == (a.boot, 3)
    b = KeySource(state)
    assert b.boot == a.boot + 1 and not b.first_start
    assert b.take(1) == (b.boot, 0)
    assert keys_mod.read_boot(state) == b.boot
    assert not os.path.exists(os.path.join(state, "boot.tmp"))


def test_keys_never_go_below_the_outbox_floor(state):
    first = KeySource(state).boot
    assert KeySource(state, floor=first + 40).boot == first + 41


def test_keys_first_start_takes_the_clock_so_a_wiped_state_never_reuses_a_boot(tmp_path):
    before = int(time.time())
    a = KeySource(str(tmp_path / "one"))
    assert a.first_start and before <= a.boot <= int(time.time())
    last = KeySource(str(tmp_path / "one")).boot  # a second start: a.boot + 1
    # the state directory is lost (SD card re-imaged) a few seconds later: the next first
    # start is still above every boot used (as long as starts averaged < 1 per second)
    time.sleep(2.05)
    b = KeySource(str(tmp_path / "two"))
    assert b.first_start and b.boot > last
    assert keys_mod.first_boot(1000) == 0  # clock not set: counting starts at 0


def test_keys_unreadable_counter_jumps_above_any_counted_boot(state):
    KeySource(state)
    with open(os.path.join(state, "boot"), "w") as f:
        f.write("garbage")
    assert KeySource(state, floor=7).boot >= int(time.time())


def test_keys_seq_overflow_starts_a_new_boot(state):
    ks = KeySource(state)
    ks.seq = keys_mod.MAX_U32 - 1
    assert ks.take(2) == (ks.boot, keys_mod.MAX_U32 - 1)
    boot = ks.boot
    assert ks.take(1) == (boot + 1, 0)
    assert keys_mod.read_boot(state) == boot + 1


# ---- batching ----------------------------------------------------------------------

def test_outbox_append_assigns_consecutive_keys_across_kinds(state):
    box = open_box(state)
    boot = box.keys.boot
    assert box.append("readings", readings(3)) == [(boot, 0), (boot, 1), (boot, 2)]
    assert box.append("log", [(T0, "ntp", ["info", "hello"])]) == [(boot, 3)]
    assert box.append("readings", readings(2)) == [(boot, 4), (boot, 5)]
    assert box.depth() == 6


def test_outbox_batches_are_contiguous_runs_of_one_kind(state):
    box = open_box(state)
    boot = box.keys.boot
    box.append("readings", readings(3))
    box.append("log", [(T0 + 5, "ntp", ["warning", "disk slow"])])
    box.append("readings", readings(2, t=T0 + 10))
    box.append("result", [(T0 + 11, "ntp", {"id": "c1", "cmd": "flush", "ok": True})])
    box.append("wave", [(T0 + 12, "ntp", lambda b, s: codec.encode_wave(DEV, b, s, T0 + 12, "ntp", 800, 0.0039, 2,
                                                                          3, 2, b"\x01\x00" * 6))])
    box.append("result", [(T0 + 13, "ntp", {"id": "c2", "cmd": "sleep", "ok": False, "error": "nope"})])
    times = [T0, T0 + 1, T0 + 2, T0 + 5, T0 + 10, T0 + 11, T0 + 11, T0 + 12, T0 + 13]
    batches = drain(box)
    assert [(b.kind, b.seq, len(b)) for b in batches] == [
        ("readings", 0, 3), ("log", 3, 1), ("readings", 4, 2), ("result", 6, 1), ("wave", 7, 1), ("result", 8, 1)]
    # Every payload passes the contract and carries the right keys and times.
    for b in batches:
        topic = "fieldwatch/v1/%s/%s" % (DEV, {"readings": "telemetry/readings", "wave": "telemetry/wave"}.get(b.kind, b.kind))
        d = codec.decode(topic, b.payload(DEV), T0)
        assert d["boot"] == boot and [r["seq"] for r in d["records"]] == [k[1] for k in b.keys]
        assert [r["ts"] for r in d["records"]] == times[b.seq:b.seq + len(b)]
    assert codec.decode("fieldwatch/v1/%s/result" % DEV, batches[5].payload(DEV), T0)["error"] == "nope"


def test_outbox_batches_respect_max_records_tq_and_bytes(state):
    box = open_box(state)
    box.append("readings", readings(1200))
    box.append("readings", readings(3, tq="rtc"))
    sizes = [(len(b), b.tq) for b in drain(box, max_records=500)]
    assert sizes == [(500, "ntp"), (500, "ntp"), (200, "ntp"), (3, "rtc")]
    box2 = open_box(state + "2")
    box2.append("log", [(T0, "ntp", ["info", "x" * 500]) for _ in range(300)])
    for b in drain(box2):
        assert len(b.payload(DEV)) <= codec.MAX_PAYLOAD and len(b) < 300


def test_outbox_kinds_filter(state):
    box = open_box(state)
    box.append("readings", readings(2))
    box.append("log", [(T0, "ntp", ["info", "a"])])
    assert [b.kind for b in drain(box, kinds=("log",))] == ["log"]
    assert [b.kind for b in drain(box)] == ["readings"]


# ---- confirmation and resend -------------------------------------------------------

def test_outbox_confirm_deletes_only_covered_keys(state):
    box = open_box(state)
    boot = box.keys.boot
    box.append("readings", readings(10))
    box.mark_sent(drain(box)[0])
    assert box.confirm([(boot, 2, 4), (boot, 7, 7), (boot + 1, 0, 100), (boot - 1, 0, 100)]) == 4
    assert box.keys_held() == [(boot, s) for s in (0, 1, 5, 6, 8, 9)]
    assert box.depth() == 6
    assert box.confirm([(boot, 2, 4)]) == 0          # a repeated ack changes nothing
    assert box.confirm([(boot, 0, 9)]) == 6 and box.depth() == 0


def test_outbox_resends_after_timeout_only(state, clock):
    box = open_box(state, clock, resend_after_s=30)
    box.append("readings", readings(5))
    assert len(drain(box)) == 1
    clock.t += 29
    assert box.next_to_send() is None
    clock.t += 2
    again = box.next_to_send()
    assert again is not None and again.keys == [(box.keys.boot, s) for s in range(5)]
    assert box.resends == 5


def test_outbox_rewind_resends_everything_as_backlog(state, clock):
    box = open_box(state, clock)
    boot = box.keys.boot
    box.append("readings", readings(4))
    drain(box)
    assert box.rewind() == 4
    box.append("readings", readings(2, t=T0 + 100))         # made after the reconnect: live
    b = box.next_to_send()
    assert b.live and b.keys == [(boot, 4), (boot, 5)]
    box.mark_sent(b)
    assert box.next_to_send(backlog_records=0) is None         # backlog held back
    assert box.next_to_send(backlog_records=3) is None         # a 4-record message is over the budget
    b = box.next_to_send(backlog_records=4)
    assert not b.live and b.keys == [(boot, s) for s in range(4)]


def test_outbox_live_records_come_before_backlog(state, clock):
    box = open_box(state, clock)
    box.append("readings", readings(3))
    box.close()
    box = open_box(state, clock)                              # earlier boot: backlog
    boot = box.keys.boot
    box.append("readings", readings(2))
    first = box.next_to_send()
    assert first.live and first.boot == boot
    box.mark_sent(first)
    second = box.next_to_send()
    assert not second.live and second.boot == boot - 1
    # live_first=False: strictly oldest first.
    box.rewind()
    assert box.next_to_send(live_first=False).boot == boot - 1


# ---- bounds and persistence -----------------------------------------------------

def test_outbox_full_drops_oldest_and_counts_persistently(state):
    box = open_box(state, max_records=10)
    boot = box.keys.boot
    box.append("readings", readings(8))
    box.append("readings", readings(5))
    assert box.depth() == 10 and box.drops == 3 and box.drops_since_open == 3
    assert box.keys_held()[0] == (boot, 3)
    box.close()
    box = open_box(state, max_records=10)
    assert box.drops == 3 and box.drops_since_open == 0 and box.depth() == 10
    box.append("readings", readings(1))
    assert box.drops == 4


def test_outbox_append_is_fsynced_bookkeeping_is_not(state):
    box = open_box(state)
    sync = lambda: box._db.execute("PRAGMA synchronous").fetchone()[0]
    assert box._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    box.append("readings", readings(3))
    assert sync() == 2                                        # FULL: the WAL is fsynced at commit
    box.mark_sent(box.next_to_send())
    box.confirm([(box.keys.boot, 0, 0)])
    assert sync() == 1                                        # NORMAL: losing this only means a resend
    box.append("readings", readings(1))
    assert sync() == 2


def test_outbox_reopen_keeps_every_record_and_resends_sent_ones(state):
    box = open_box(state)
    boot = box.keys.boot
    box.append("readings", readings(20))
    box.append("features", [(T0, "ntp", {"len_ms": 1000, "rate_hz": 800, "n": 800,
                                          "x": {"rms": 0.1, "peak": 0.3, "crest": 3.0, "dom_hz": 30}})])
    drain(box)
    box.close()
    box = open_box(state)
    assert box.keys.boot == boot + 1 and box.depth() == 21
    assert box.counts() == {"pending": 21}
    assert [(b.kind, b.boot, len(b)) for b in drain(box)] == [("readings", boot, 20), ("features", boot, 1)]


def test_outbox_oldest_age(state, clock):
    box = open_box(state, clock)
    assert box.oldest_age_s() == 0
    box.append("readings", readings(1))
    clock.t += 12.5
    box.append("readings", readings(1))
    assert box.oldest_age_s() == pytest.approx(12.5)


def test_outbox_rejects_bad_bodies(state):
    box = open_box(state)
    with pytest.raises(ValueError):
        box.append("telemetry", readings(1))
    with pytest.raises(TypeError):
        box.append("features", [(T0, "ntp", {"dt": 0, "n": 1})])
    with pytest.raises(ValueError):
        box.append("readings", readings(1, tq="gpsd"))
    assert box.depth() == 0


# ---- crashes ------------------------------------------------------------------------

WRITER = textwrap.dedent("""
    import os, sys
    sys.path.insert(0, %(root)r)
    from edge_agent.keys import KeySource
    from edge_agent.outbox import Outbox
    path = os.path.join(%(state)r, "outbox.db")
    box = Outbox(path, KeySource(%(state)r, floor=Outbox.max_boot_in(path)), "pump-07")
    print("ready", flush=True)
    i = 0
    while True:
        n = 1 + i %% 40
        ks = box.append("readings", [(1751327990000 + i, "ntp", ["temp_c", float(i)])] * n)
        if i %% 7 == 0:                                           # deletes happen too
            print("confirming", ks[0][0], ks[0][1], flush=True)
            box.confirm([(ks[0][0], ks[0][1], ks[0][1])])
            print("confirmed", ks[0][0], ks[0][1], flush=True)
        print("committed", ks[0][0], ks[0][1], ks[-1][1], flush=True)
        i += 1
""")


def test_outbox_survives_sigkill_while_enqueuing(state):
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    os.makedirs(state)
    committed, confirming, confirmed = set(), set(), set()
    rng = random.Random(7)
    for round_ in range(4):
        p = subprocess.Popen([sys.executable, "-c", WRITER % {"root": root, "state": state}],
                             stdout=subprocess.PIPE, text=True)
        assert p.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.1, 0.5))
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        # Read through the same buffered stream as readline() above: communicate() with a
        # timeout reads the raw pipe and would miss lines readline() had already buffered.
        out = p.stdout.read()
        p.stdout.close()
        for line in out.split("\n")[:-1]:                      # a torn last line is ignored
            parts = line.split()
            if len(parts) == 4 and parts[0] == "committed":
                b, lo, hi = int(parts[1]), int(parts[2]), int(parts[3])
                committed.update((b, s) for s in range(lo, hi + 1))
            elif len(parts) == 3 and parts[0] in ("confirming", "confirmed"):
                (confirming if parts[0] == "confirming" else confirmed).add((int(parts[1]), int(parts[2])))
        db = sqlite3.connect(os.path.join(state, "outbox.db"))
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        held = {(b, s + i) for b, s, n in db.execute("SELECT boot, seq, n FROM segments") for i in range(n)}
        db.close()
        # Every record reported committed is there unless a confirmation was under way for it;
        # a confirmation reported done really deleted it.
        assert committed - confirming <= held
        assert not (held & confirmed)
        # Within each boot the keys run from 0 without gaps, except confirmed ones.
        for boot in {b for b, _ in held}:
            seqs = {s for b, s in held | confirming if b == boot}
            assert seqs == set(range(max(seqs) + 1)), "gap in boot %d" % boot
    assert len({b for b, _ in committed}) == 4 and len(committed) > 100


def test_outbox_payload_carries_each_body_exactly_as_the_codec_encodes_it(state):
    """payload() splices stored JSON text; the message must equal the codec's own encoding."""
    box = open_box(state)
    fix = {"mode": 3, "lat_e7": 515000000, "lon_e7": -1250000, "alt_mm": 12500, "note": "a \"q\" ü"}
    win = {"len_ms": 1000, "rate_hz": 800, "n": 800, "x": {"rms": 0.01, "peak": 0.03}}
    box.append("readings", [(T0 + i, "ntp", ["temp_c", 20.5 + i]) for i in range(3)])
    box.append("log", [(T0 + 7, "ntp", ["warning", "disk \"slow\"\n<b>"])])
    box.append("fix", [(T0 + 8, "gps", fix), (T0 + 9, "gps", dict(fix, mode=2))])
    box.append("features", [(T0 + 10, "ntp", win)])
    expected = [
        codec.encode_readings(DEV, box.keys.boot, 0, T0, "ntp", [[i, "temp_c", 20.5 + i] for i in range(3)]),
        codec.encode_logs(DEV, box.keys.boot, 3, T0 + 7, "ntp", [[0, "warning", "disk \"slow\"\n<b>"]]),
        codec.encode_fixes(DEV, box.keys.boot, 4, T0 + 8, "gps", [dict(fix, dt=0), dict(fix, mode=2, dt=1)]),
        codec.encode_features(DEV, box.keys.boot, 6, T0 + 10, "ntp", [dict(win, dt=0)]),
    ]
    got = [b.payload(DEV) for b in drain(box)]
    assert [json.loads(p) for p in got] == [json.loads(p) for p in expected]


# ---- segments ------------------------------------------------------------------------

def test_outbox_one_record_per_call_adds_up_to_segments_until_handed_out(state):
    box = open_box(state)
    boot = box.keys.boot
    for i in range(5):                                        # offline: one reading per pass
        box.append("readings", [(T0 + i, "ntp", ["temp_c", 20.0 + i])])
    assert box.segments() == [(boot, 0, 5, "readings")]
    b = box.next_to_send()
    assert b.keys == [(boot, s) for s in range(5)]
    box.append("readings", readings(1, t=T0 + 9))           # after a hand-out: a new segment
    assert box.segments() == [(boot, 0, 5, "readings"), (boot, 5, 1, "readings")]
    box.append("log", [(T0 + 10, "ntp", ["info", "x"])])     # another kind breaks the run
    box.append("readings", readings(1, t=T0 + 11))
    assert [s[1:] for s in box.segments()] == [(0, 5, "readings"), (5, 1, "readings"), (6, 1, "log"),
                                                (7, 1, "readings")]
    d = codec.decode("fieldwatch/v1/%s/telemetry/readings" % DEV, b.payload(DEV), T0)
    assert [(r["seq"], r["ts"], r["value"]) for r in d["records"]] == [(i, T0 + i, 20.0 + i) for i in range(5)]


def test_outbox_appends_stop_at_the_size_cap_and_at_a_new_time_quality(state):
    from edge_agent.outbox import APPEND_MAX_BYTES
    box = open_box(state)
    for i in range(400):
        box.append("readings", [(T0 + i, "ntp", ["temp_c", 20.0 + i])])
    box.append("readings", [(T0 + 500, "gps", ["temp_c", 1.0])])
    segs = box.segments()
    assert sum(s[2] for s in segs) == 401 and len(segs) > 2
    assert segs[-1][2] == 1                                   # the gps one stands alone
    for b in drain(box):
        empty = codec.encode_readings(DEV, b.boot, b.seq, b.ts0, b.tq, [])
        assert len(b.payload(DEV)) - len(empty) <= APPEND_MAX_BYTES     # the records' part
        codec.decode("fieldwatch/v1/%s/telemetry/readings" % DEV, b.payload(DEV), T0)


def test_outbox_sent_state_is_not_written_and_a_restart_sends_everything_again(state):
    box = open_box(state)
    box.append("readings", readings(3))
    writes = box._db.total_changes
    b = box.next_to_send()
    box.mark_sent(b)
    assert box._db.total_changes == writes and box.counts() == {"sent": 3}
    assert box.next_to_send() is None
    box.close()
    box = open_box(state)
    assert box.counts() == {"pending": 3} and box.next_to_send().keys == b.keys


def test_outbox_confirm_of_the_middle_of_a_segment_keeps_both_ends_sendable(state):
    box = open_box(state)
    boot = box.keys.boot
    box.append("fix", [(T0 + 1000 * i, "gps", {"mode": 3, "lat_e7": i, "lon_e7": -i}) for i in range(6)])
    assert box.confirm([(boot, 2, 3)]) == 2
    assert box.segments() == [(boot, 0, 2, "fix"), (boot, 4, 2, "fix")]
    got = []
    for b in drain(box):
        d = codec.decode(topics.topic(DEV, "fix"), b.payload(DEV), T0)
        got += [(r["seq"], r["ts"], r["lat_e7"]) for r in d["records"]]
    assert got == [(i, T0 + 1000 * i, i) for i in (0, 1, 4, 5)]


def test_outbox_max_records_splits_a_segment_and_the_rest_follows(state):
    box = open_box(state)
    boot = box.keys.boot
    box.append("readings", readings(10))
    box.rewind()                                     # as after a reconnect: all backlog
    sizes = []
    while True:
        b = box.next_to_send(max_records=4, backlog_records=4)
        if b is None:
            break
        box.mark_sent(b)
        d = codec.decode("fieldwatch/v1/%s/telemetry/readings" % DEV, b.payload(DEV), T0)
        assert [(r["seq"], r["ts"]) for r in d["records"]] == [(s, T0 + s) for _, s in b.keys]
        sizes.append(len(b))
    assert sizes == [4, 4, 2]
    assert box.confirm([(boot, 0, 9)]) == 10 and box.segments() == []


def test_outbox_never_appends_to_a_segment_it_split(state):
    box = open_box(state)
    boot = box.keys.boot
    for i in range(5):
        box.append("readings", [(T0 + i, "ntp", ["temp_c", float(i)])])
    box.rewind()                                     # the open segment is backlog now
    assert box.next_to_send(max_records=2, backlog_records=1) is None   # split 2 + 3, over the budget
    box.append("readings", [(T0 + 5, "ntp", ["temp_c", 5.0])])
    assert box.keys_held() == [(boot, s) for s in range(6)]
    got = []
    for b in drain(box):
        d = codec.decode(topics.topic(DEV, "readings"), b.payload(DEV), T0)
        got += [(r["seq"], r["ts"], r["value"]) for r in d["records"]]
    assert got == [(5, T0 + 5, 5.0)] + [(s, T0 + s, float(s)) for s in range(5)]   # live first


# ---- a random walk against a model ------------------------------------------------------

@pytest.mark.parametrize("seed", range(6))
def test_outbox_random_operations_match_a_model(tmp_path, seed):
    """Random appends (to open segments, kinds, time qualities), hand-outs, confirmations of whole,
    partial and foreign ranges, resend timeouts, reconnects, reopens and drops: the outbox
    always holds exactly the model's records, and every message carries them unchanged."""
    rng = random.Random(seed)
    state = str(tmp_path / "state")
    clock = Clock()
    max_records = rng.choice([40, 200, 10 ** 6])
    box = open_box(state, clock, max_records=max_records, resend_after_s=30)
    model = {}                          # (boot, seq) -> (kind, ts, tq, value)
    order = []                          # keys in the order stored, for drop-oldest
    sent = []                           # batches handed out and marked sent
    drops = 0
    for step in range(250):
        op = rng.random()
        if op < 0.45:
            kind = rng.choice(["readings", "readings", "log", "fix"])
            n = rng.choice([1, 1, 1, 2, 5, 30])
            tq = rng.choice(["ntp", "ntp", "ntp", "gps"])
            items, values = [], []
            for i in range(n):
                ts = T0 + step * 1000 + i
                v = rng.randint(0, 10 ** 6)
                body = {"readings": ["r", v], "log": ["info", "line %d" % v]}.get(kind) or \
                    {"mode": 3, "lat_e7": v, "lon_e7": -v}
                items.append((ts, tq, body))
                values.append((kind, ts, tq, v))
            keys = box.append(kind, items)
            for k, v in zip(keys, values):
                model[k] = v
                order.append(k)
            over = len(model) - max_records
            if over > 0:                                  # drop-oldest, as the outbox must
                for k in sorted(model)[:over]:
                    del model[k]
                drops += over
        elif op < 0.75:
            b = box.next_to_send(max_records=rng.choice([500, 500, 7]),
                               backlog_records=rng.choice([None, None, 0, 3, 50]))
            if b is not None:
                payload = b.payload(DEV)
                d = codec.decode(topics.topic(DEV, b.kind), payload, T0)
                for r in d["records"]:
                    kind, ts, tq, v = model[(d["boot"], r["seq"])]
                    assert (b.kind, r["ts"], d["tq"]) == (kind, ts, tq)
                    assert {"readings": lambda: r["value"], "log": lambda: int(r["text"].split()[1]),
                            "fix": lambda: r["lat_e7"]}[kind]() == v
                if rng.random() < 0.9:
                    box.mark_sent(b)
                    sent.append(b)
        elif op < 0.88 and sent:
            b = sent.pop(rng.randrange(len(sent)))
            rs = b.ranges
            if rng.random() < 0.3:                        # a confirmation covering part of it
                boot, lo, hi = rs[0]
                a = rng.randint(lo, hi)
                rs = [(boot, a, rng.randint(a, hi))]
            if rng.random() < 0.1:                        # or another boot's, or nothing known
                rs = rs + [(rs[0][0] + 99, 0, 5)]
            n = box.confirm(rs)
            gone = [k for k in model if any(k[0] == bt and lo <= k[1] <= hi for bt, lo, hi in rs)]
            for k in gone:
                del model[k]
            assert n == len(gone)
        elif op < 0.93:
            clock.t += rng.choice([5, 31])
        elif op < 0.97:
            box.rewind()
            sent = []
        else:
            box.close()
            box = open_box(state, clock, max_records=max_records, resend_after_s=30)
            sent = []
        assert box.keys_held() == sorted(model)
        assert box.depth() == len(model)
    assert box.drops == drops
    # Everything left comes out, each record once per hand-out round.
    box.rewind()
    seen = []
    for b in drain(box):
        d = codec.decode(topics.topic(DEV, b.kind), b.payload(DEV), T0)
        seen += [(d["boot"], r["seq"]) for r in d["records"]]
    assert sorted(seen) == sorted(model) and len(seen) == len(set(seen))


def test_outbox_messages_stored_under_an_old_device_id_go_out_under_the_new_one(state):
    box = open_box(state, dev="pump-old")
    boot = box.keys.boot
    box.append("readings", readings(3))
    box.append("fix", [(T0 + 9, "gps", {"mode": 3, "lat_e7": 1, "lon_e7": 2})])
    box.close()
    box = open_box(state, dev="pump-new")                     # renamed in the config since
    for b in drain(box):
        d = codec.decode(topics.topic("pump-new", b.kind), b.payload("pump-new"), T0)
        assert d["boot"] == boot and [r["seq"] for r in d["records"]] == [k[1] for k in b.keys]
    with pytest.raises(ValueError):
        open_box(state, dev="no/slashes")
