"""The buffer contract (docs/buffer.md), one suite over both implementations: the Pi's
SQLite outbox on CPython and the ESP32's flash ring on the MicroPython Unix port.

The cases are plain functions in buffer_cases.py, run over the outbox adapter
(buffer_outbox.py) in this process and over the ring adapter (buffer_ring.py) by
the MicroPython interpreter, which prints "ok <case>" when every assert held.
"""

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fieldwatch.devservices.micropython import compile_mpy

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:   # buffer_cases and buffer_outbox, imported by name as the scripts do
    sys.path.insert(0, str(HERE))

import buffer_cases  # noqa: E402
from buffer_outbox import OutboxBuffer  # noqa: E402

CASE_NAMES = [name for name, _ in buffer_cases.CASES]


@pytest.fixture(scope="module")
def fw_path(tmp_path_factory):
    out = tmp_path_factory.mktemp("mpy")
    compile_mpy(out, packages=("firmware", "fieldwatch/wire"))
    # buffer_ring.py imports buffer_cases from its own directory
    return [str(HERE), str(out / "firmware"), str(out)]


@pytest.mark.parametrize("name", CASE_NAMES)
def test_buffer_contract_outbox(name, tmp_path):
    made = []

    def make(capacity=None):
        made.append(OutboxBuffer(str(tmp_path / ("b%d" % len(made))), capacity))
        return made[-1]
    buffer_cases.case(name)(make)


@pytest.mark.parametrize("name", CASE_NAMES)
def test_buffer_contract_ring(name, micropython, fw_path, tmp_path):
    r = micropython(str(HERE / "buffer_ring.py"), args=("case", name, str(tmp_path)), heapsize="100K",
                    path=fw_path, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.splitlines()[-1] == "ok " + name


def test_buffer_contract_cases_cover_the_contract():
    # the operations and guarantees docs/buffer.md promises, each with a case
    assert CASE_NAMES == [
        "append_then_next_to_send_in_key_order", "confirm_removes_exactly_the_covered_keys",
        "nothing_is_deleted_without_a_confirmation", "rewind_sends_everything_unconfirmed_again",
        "full_drops_the_oldest_and_counts_them", "power_cut_mid_write_loses_no_stored_record",
        "keys_are_unique_across_restarts"]


# ---- the process killed while appending ----------------------------------------------

def _outbox_argv(mode, state):
    return [sys.executable, str(HERE / "buffer_outbox.py"), mode, state]


def _keys(lines, word):
    return [(int(p[1]), int(p[2])) for p in (ln.split() for ln in lines) if len(p) == 3 and p[0] == word]


@pytest.mark.parametrize("impl", ["outbox", "ring"])
def test_buffer_contract_killed_while_appending_loses_no_stored_record(impl, micropython, fw_path, tmp_path):
    state = str(tmp_path / "state")
    rng = random.Random(11)
    confirmed = set()     # keys earlier drains confirmed
    pending = set()       # the record the previous drain appended (unconfirmed)
    total = 0
    for _ in range(3):
        if impl == "outbox":
            p = subprocess.Popen(_outbox_argv("writer", state), stdout=subprocess.PIPE, text=True)
        else:
            p = micropython.start(str(HERE / "buffer_ring.py"), args=("writer", state), path=fw_path,
                                  cwd=str(tmp_path), stderr=subprocess.DEVNULL)
        first = p.stdout.readline().split()
        assert first[0] == "ready", first
        time.sleep(rng.uniform(0.2, 0.6))
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)
        out = p.stdout.read()
        p.stdout.close()
        boot = int(first[1])
        stored = [(boot, 0)] + _keys(out.split("\n")[:-1], "stored")   # a torn last line is ignored
        total += len(stored)
        # Open what the killed writer left and send everything, confirming as it goes.
        if impl == "outbox":
            r = subprocess.run(_outbox_argv("drain", state), capture_output=True, text=True, timeout=60)
        else:
            r = micropython(str(HERE / "buffer_ring.py"), args=("drain", state), heapsize="100K",
                            path=fw_path, cwd=str(tmp_path))
        assert r.returncode == 0, r.stdout + r.stderr
        lines = r.stdout.splitlines()
        sent = _keys(lines, "sent")
        assert sent == sorted(set(sent)), "not in key order, or twice"
        must = set(stored) | pending
        assert must <= set(sent), "stored but lost: %s" % sorted(must - set(sent))[:5]
        extra = set(sent) - must
        if impl == "outbox":
            assert not extra & confirmed, "confirmed, yet sent again"
        # besides repeats of confirmed keys (the ring), at most the append under way when killed
        assert extra - confirmed <= {(boot, stored[-1][1] + 1)}
        confirmed |= set(sent)
        appended = _keys(lines, "appended")[0]
        assert appended[0] > boot and appended not in confirmed and "depth 1" in lines
        pending = {appended}
    assert total > 30
