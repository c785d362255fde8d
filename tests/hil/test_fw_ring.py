"""Firmware outbox (firmware/ring.py) and boot counter (firmware/keys.py) on
MicroPython with a 100 KB heap, on a real directory standing in for LittleFS."""




def run(micropython, fw_path, tmp_path, code):
    r = micropython(code, heapsize="100K", path=fw_path, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_fw_ring_confirm_frees_and_reset_resends_unconfirmed(micropython, fw_path, tmp_path):
    d = str(tmp_path / "outbox")
    out = run(micropython, fw_path, tmp_path, """
from ring import Ring
r = Ring(%r, segment_bytes=300, max_segments=50, window=8)
for i in range(20):
    r.append("readings", 1, i, 1, b"payload-%%02d-" %% i + b"x" * 40)
sent = []
while True:
    m = r.next_to_send(0)
    if m is None:
        break
    sent.append(m[2])
print("sent", sent)                  # window of 8
r.confirm([(1, 0, 3), (1, 5, 6)])    # 4 is missing: only 0..3 are freed
print("inflight", r.inflight(), "depth", r.depth())
m = r.next_to_send(0)
print("next", m[2])
r.close()
""" % d)
    lines = out.splitlines()
    assert lines[0] == "sent [0, 1, 2, 3, 4, 5, 6, 7]"
    assert lines[1] == "inflight 4 depth 16"
    assert lines[2] == "next 8"
    # "reset": a new Ring on the same directory resends from the oldest unconfirmed
    out = run(micropython, fw_path, tmp_path, """
from ring import Ring
r = Ring(%r, segment_bytes=300, max_segments=50, window=100)
keys = []
while True:
    m = r.next_to_send(0)
    if m is None:
        break
    keys.append(m[2])
    assert m[4].startswith(b"payload-%%02d-" %% m[2])
print(keys)
""" % d)
    keys = eval(out.strip())
    # a segment holds 4 records of 70 bytes: 0..3 filled the first one, confirmed, so
    # its file was deleted; everything else comes again, in order, exactly once
    assert keys == list(range(4, 20))


def test_fw_ring_torn_tail_dropped_on_recovery(micropython, fw_path, tmp_path):
    d = tmp_path / "outbox"
    run(micropython, fw_path, tmp_path, """
from ring import Ring
r = Ring(%r)
for i in range(5):
    r.append("fix", 7, i, 1, b"{}" * 20)
r.close()
""" % str(d))
    seg = sorted(d.iterdir())[-1]
    data = seg.read_bytes()
    seg.write_bytes(data[:-10])          # power cut in the middle of the last record
    out = run(micropython, fw_path, tmp_path, """
from ring import Ring
r = Ring(%r, window=100)
keys = []
while True:
    m = r.next_to_send(0)
    if m is None:
        break
    keys.append(m[2])
print(keys, r.torn)
r.append("fix", 8, 0, 1, b"after")
m = r.next_to_send(0)
print(m[1], m[2], m[4])
""" % str(d))
    a, b = out.splitlines()
    assert a == "[0, 1, 2, 3] 1"
    assert b == "8 0 b'after'"


def test_fw_ring_full_drops_oldest_and_counts(micropython, fw_path, tmp_path):
    out = run(micropython, fw_path, tmp_path, """
from ring import Ring
r = Ring(%r, segment_bytes=200, max_segments=3, window=100)
for i in range(40):
    r.append("readings", 1, i, 2, b"z" * 30)
keys = []
while True:
    m = r.next_to_send(0)
    if m is None:
        break
    keys.append(m[2])
print(r.drops, keys[0], keys[-1], len(keys))
""" % str(tmp_path / "outbox"))
    drops, first, last, n = map(int, out.split())
    assert drops > 0 and last == 39 and n == 40 - drops and first == drops
    print("kept %d of 40 records, dropped %d oldest" % (n, drops))


def test_fw_ring_resend_after_timeout(micropython, fw_path, tmp_path):
    out = run(micropython, fw_path, tmp_path, """
from ring import Ring
r = Ring(%r, window=4, resend_ms=1000)
for i in range(6):
    r.append("readings", 1, i, 1, b"r")
a = [r.next_to_send(0)[2] for _ in range(4)]
print(a, r.next_to_send(500))     # window full, not timed out
r.confirm([(1, 0, 0)])
print(r.next_to_send(600)[2])     # 0 freed: room for 4
print(r.next_to_send(2000)[2])    # record 1 is 2000 ms old: resend from 1
""" % str(tmp_path / "outbox"))
    assert out.splitlines() == ["[0, 1, 2, 3] None", "4", "1"]


def test_fw_keys_boot_counter_one_write_per_boot(micropython, fw_path, tmp_path):
    code = "import keys; print(keys.next_boot(%r))" % str(tmp_path / "bc")
    got = [int(run(micropython, fw_path, tmp_path, code)) for _ in range(3)]
    assert got == [1, 2, 3]
    (tmp_path / "bc").write_bytes(b"garbage!")   # corrupt: starts again but never crashes
    assert int(run(micropython, fw_path, tmp_path, code)) >= 1


def test_fw_keys_move_to_a_new_boot_before_seq_passes_2_32(micropython, fw_path, tmp_path):
    # As edge_agent/keys.py: a key is never (boot, 2^32) or above; the next boot takes over.
    code = """import keys
k = keys.Keys(%r)
k.seq = 4294967294
print(k.take(1), k.take(2), k.take(1), k.seq)
""" % str(tmp_path / "bc")
    assert run(micropython, fw_path, tmp_path, code).strip() == "(1, 4294967294) (2, 0) (2, 2) 3"


def test_fw_ring_fully_confirmed_open_segment_then_next_segment(micropython, fw_path, tmp_path):
    # Regression: every record of the open (only) segment is confirmed, then the next
    # append starts a new segment. The confirmed segment must go when the first record
    # of the new one is confirmed, nothing may be sent twice, and depth counts exactly.
    out = run(micropython, fw_path, tmp_path, """
from ring import Ring
r = Ring(%r, segment_bytes=200, max_segments=50, window=100)
for i in range(3):
    r.append("log", 2, i, 1, b"a" * 40)      # 58 bytes each: 3 fill the first segment
for i in range(3):
    m = r.next_to_send(0)
r.confirm([(2, 0, 2)])
print("depth", r.depth(), "segments", len(r._segs))
r.append("log", 2, 3, 1, b"b" * 40)          # does not fit: a new segment
r.append("log", 2, 4, 1, b"b" * 40)
sent = []
while True:
    m = r.next_to_send(0)
    if m is None:
        break
    sent.append(m[2])
r.confirm([(2, 3, 3)])
print("sent", sent, "depth", r.depth(), "segments", len(r._segs))
r.rewind()                                   # a reconnect: resend what is unconfirmed
again = []
while True:
    m = r.next_to_send(0)
    if m is None:
        break
    again.append(m[2])
print("again", again)
r.close()
""" % str(tmp_path / "outbox"))
    assert out.splitlines() == ["depth 0 segments 1", "sent [3, 4] depth 1 segments 1", "again [4]"]
    # after a reset: the first segment is gone for good (0..2 never come back); only
    # whole segments are deleted on flash, so 3 comes again with 4 (a duplicate by key)
    out = run(micropython, fw_path, tmp_path, """
from ring import Ring
r = Ring(%r, window=100)
keys = []
while True:
    m = r.next_to_send(0)
    if m is None:
        break
    keys.append(m[2])
print(keys, r.depth())
""" % str(tmp_path / "outbox"))
    assert out.strip() == "[3, 4] 2"


def test_fw_ring_big_record_streams_from_flash_and_corruption_is_caught(micropython, fw_path, tmp_path):
    # A record over 512 bytes is stored as payload + tail and handed back as a
    # ring.Stored; a flipped byte in it fails the CRC at recovery (torn, not sent).
    d = tmp_path / "outbox"
    out = run(micropython, fw_path, tmp_path, """
from ring import Ring
r = Ring(%r, window=100)
head = b"H" * 40
tail = bytes(range(256)) * 3
r.append("wave", 5, 0, 1, head, memoryview(tail))
r.append("wave", 5, 1, 1, head, memoryview(tail))
m = r.next_to_send(0)
print(m[0], m[2], type(m[4]).__name__, len(m[4]), m[4].read() == head + tail)
r.close()
""" % str(d))
    assert out.strip() == "wave 0 Stored 808 True"
    seg = sorted(d.iterdir())[-1]
    data = bytearray(seg.read_bytes())
    data[14 + 808 + 4 + 14 + 500] ^= 0xFF      # inside the second record's samples
    seg.write_bytes(bytes(data))
    out = run(micropython, fw_path, tmp_path, """
from ring import Ring
r = Ring(%r, window=100)
keys = []
while True:
    m = r.next_to_send(0)
    if m is None:
        break
    keys.append(m[2])
print(keys, r.torn)
""" % str(d))
    assert out.strip() == "[0] 1"


def test_fw_ring_oldest_age_of_the_oldest_unconfirmed_record(micropython, fw_path, tmp_path):
    # status.buf.oldest_s (issue 15): the age of the oldest record not yet confirmed,
    # estimated from its place between its segment's first and last append; a
    # segment from an earlier boot counts from this boot
    d = str(tmp_path / "outbox")
    out = run(micropython, fw_path, tmp_path, """
import time
from ring import Ring
r = Ring(%r, segment_bytes=300, max_segments=50, window=100)
print("empty", r.oldest_age_ms())
t0 = time.ticks_ms()
for i in range(8):                       # 4 records of 70 bytes a segment: two segments
    r.append("readings", 1, i, 1, b"payload-%%02d-" %% i + b"x" * 40)
    time.sleep_ms(100)
now = time.ticks_ms()
print("all", r.oldest_age_ms(now), time.ticks_diff(now, t0))
while r.next_to_send(0) is not None:
    pass
r.confirm([(1, 0, 2)])                   # the oldest unconfirmed is now record 3
print("after3", r.oldest_age_ms(now), time.ticks_diff(now, t0))
r.confirm([(1, 3, 5)])                   # record 6, in the second segment
print("after6", r.oldest_age_ms(now))
r.confirm([(1, 6, 7)])
print("none", r.oldest_age_ms(now), r.depth())
for i in range(8, 10):
    r.append("readings", 1, i, 1, b"payload-%%02d-" %% i + b"x" * 40)
r.close()
""" % d)
    words = dict((ln.split()[0], [int(x) for x in ln.split()[1:]]) for ln in out.splitlines())
    assert words["empty"] == [0]
    age, elapsed = words["all"]
    assert elapsed - 30 <= age <= elapsed          # record 0 was appended at t0
    age3, elapsed = words["after3"]
    assert elapsed - 300 - 60 <= age3 <= elapsed - 300 + 10, (age3, elapsed)   # 3 x 100 ms later
    assert 150 <= words["after6"][0] <= 250        # records 6 and 7 are 200 and 100 ms old
    assert words["none"] == [0, 0]
    # the next boot: every record left was written before it, so it is as old as the boot
    # (4..7 come again with 8 and 9: their segment was still the open one when confirmed)
    out = run(micropython, fw_path, tmp_path, """
import time
from ring import Ring
r = Ring(%r, window=100)
time.sleep_ms(300)
print(r.depth(), r.oldest_age_ms())
""" % d)
    depth, age = map(int, out.split())
    assert depth == 6 and 300 <= age <= 400
