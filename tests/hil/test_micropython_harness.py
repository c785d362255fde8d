"""Proof that the MicroPython harness runs the real Unix-port interpreter with the
heap limit asked for and the repo on its module path."""

import os
import subprocess

from fieldwatch.devservices.micropython import REPO_ROOT, compile_mpy


def test_runs_real_micropython_with_100k_heap(micropython):
    r = micropython("import sys, gc\n"
                    "gc.collect()\n"
                    "print(sys.implementation.name)\n"
                    "print(gc.mem_free() + gc.mem_alloc())\n", heapsize="100K")
    assert r.returncode == 0, r.stderr
    name, heap = r.stdout.split()
    assert name == "micropython"
    assert 90_000 < int(heap) <= 100 * 1024, "heap is %s bytes, not ~100K" % heap


def test_allocating_more_than_the_heap_raises_memoryerror(micropython):
    code = ("try:\n"
            "    b = bytearray(200 * 1024)\n"
            "    print('allocated', len(b))\n"
            "except MemoryError:\n"
            "    print('MemoryError')\n")
    assert micropython(code, heapsize="100K").stdout.strip() == "MemoryError"
    # The same allocation fits a bigger heap: the limit is the one we set.
    assert micropython(code, heapsize="1M").stdout.strip() == "allocated 204800"


def test_import_wire_codec_from_repo_root(micropython, tmp_path):
    # Compiling fieldwatch/wire/codec.py from source on the device needs more than a 100K heap
    # (the compiler's working memory), so the source import runs with 256K here;
    # as precompiled .mpy (how firmware is deployed) it fits in 100K, below.
    code = ("import fieldwatch.wire.codec\n"
            "print(fieldwatch.wire.codec.__file__)\n"
            "print(callable(fieldwatch.wire.codec.decode))\n")
    r = micropython(code, heapsize="256K", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    path, ok = r.stdout.split()
    assert path == os.path.join(str(REPO_ROOT), "fieldwatch", "wire", "codec.py")
    assert ok == "True"


def test_import_precompiled_wire_codec_in_100k(micropython, tmp_path):
    mpy_dir = compile_mpy(tmp_path / "mpy", packages=("fieldwatch/wire",))
    code = ("import fieldwatch.wire.codec\n"
            "print(fieldwatch.wire.codec.__file__)\n"
            "print(callable(fieldwatch.wire.codec.decode))\n")
    # cwd elsewhere: MicroPython puts '' first in sys.path, which would shadow mpy_dir.
    r = micropython(code, heapsize="100K", path=[mpy_dir], cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    path, ok = r.stdout.split()
    assert path.endswith("codec.mpy"), path
    assert ok == "True"


def test_script_file_args_and_exit_code(micropython, tmp_path):
    script = tmp_path / "prog.py"
    script.write_text("import sys\nprint(sys.argv[1:])\nraise ValueError('boom')\n")
    r = micropython(script, args=["a", 2])
    assert r.stdout.splitlines()[0] == "['a', '2']"
    assert r.returncode == 1
    # The Unix port prints an uncaught exception's traceback on stdout, not stderr.
    assert "ValueError: boom" in r.stdout + r.stderr


def test_long_running_process_can_be_killed(micropython):
    proc = micropython.start("import time\n"
                             "print('ready')\n"
                             "while True:\n"
                             "    time.sleep_ms(10)\n")
    assert proc.stdout.readline().strip() == "ready"
    assert proc.poll() is None
    proc.kill()
    assert proc.wait(timeout=5) == -9


def test_timeout_kills_a_hung_script(micropython):
    try:
        micropython("while True:\n    pass\n", timeout=1)
    except subprocess.TimeoutExpired:
        return
    raise AssertionError("a script that never ends was not stopped by the timeout")
