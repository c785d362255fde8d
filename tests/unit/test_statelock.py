"""The state directory's lock: one holder at a time, its PID named, never stale after the holder dies."""

import os
import signal
import subprocess
import sys

import pytest

from edge_agent.statelock import LOCK_FILE, StateDirInUse, StateLock

HOLD = "import sys, time; from edge_agent.statelock import StateLock; StateLock(sys.argv[1]); print('held', flush=True); time.sleep(60)"


def test_statelock_refuses_a_second_holder_and_names_the_first(tmp_path):
    first = StateLock(str(tmp_path))
    with pytest.raises(StateDirInUse) as e:
        StateLock(str(tmp_path))
    assert e.value.pid == os.getpid()
    assert str(tmp_path) in str(e.value) and "PID %d" % os.getpid() in str(e.value)
    first.release()
    StateLock(str(tmp_path)).release()


def test_statelock_is_free_at_once_after_the_holder_is_killed(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"held\n"
        with pytest.raises(StateDirInUse) as e:
            StateLock(str(tmp_path))
        assert e.value.pid == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        holder.stdout.close()
    # The dead holder's PID is still in the file; the lock, not the PID, decides.
    assert (tmp_path / LOCK_FILE).read_text() == "%d\n" % holder.pid
    lock = StateLock(str(tmp_path))
    assert (tmp_path / LOCK_FILE).read_text() == "%d\n" % os.getpid()
    lock.release()


def test_statelock_unknown_pid_when_the_file_is_empty(tmp_path):
    first = StateLock(str(tmp_path))
    os.truncate(tmp_path / LOCK_FILE, 0)
    with pytest.raises(StateDirInUse) as e:
        StateLock(str(tmp_path))
    assert e.value.pid is None and "PID unknown" in str(e.value)
    first.release()
