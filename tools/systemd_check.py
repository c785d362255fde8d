#!/usr/bin/env python3
"""Run the edge agent's real systemd unit under a real systemd, booted as PID 1 in private namespaces.

    sudo .venv/bin/python tools/systemd_check.py            # about 15 s; exit 0 when every check holds

What it does, from a clean state:

  1. starts a private Mosquitto (temp dir, free port on 127.0.0.1);
  2. boots /lib/systemd/systemd as PID 1 of new PID, mount, UTS, IPC and cgroup
     namespaces (`unshare`), with `container=` set, a cgroup2 subtree of its own, and
     private /run, /tmp, /dev, /etc/systemd/system, overlays on /etc and /var, a
     read-only /sys and /proc/sys. $SYSTEMD_UNIT_PATH holds only the private
     /etc/systemd/system and a handful of stand-in targets plus journald, and there
     are no generators: this systemd can start nothing of the machine's (no
     postgresql, mosquitto, gpsd...), and it writes nothing outside its namespaces;
  3. inside it, writes /etc/edge-agent/config.toml (simulated sensor, GPS off, the
     private broker) and runs the real `edge-agent install-service`, which writes the
     unit to /etc/systemd/system and runs `systemctl daemon-reload` and
     `systemctl enable --now edge-agent.service` against that systemd;
  4. checks, from systemd's own state and journal:
       ready      Type=notify: `activating` until the agent's READY=1, `active (running)` after
                  its start-up log line, with its STATUS= text;
       watchdog   WATCHDOG=1 keeps it running past WatchdogSec; SIGSTOP gets it killed on
                  the watchdog timeout and restarted;
       restart    SIGKILL gets it restarted (Restart=always);
       state      /var/lib/edge-agent is made by StateDirectory=, owned by the DynamicUser=
                  user, and holds a sound outbox.db; the agent runs as that user with no
                  capabilities and no_new_privs;
       hardening  inside the service's mount namespace, even root cannot write /, /etc,
                  /usr, /var, the checkout or /root (ProtectSystem=strict, ProtectHome=),
                  only the state directory; its /tmp is private;
       host       the machine's own postgres and mosquitto are the same processes as before;
  5. kills its PID 1 (and with it everything in the namespace) and the broker, and
     removes its cgroup and temp dir.

WatchdogSec=30 would make the watchdog check take a minute: a drop-in sets it to
--watchdog-sec (3 s by default; 0 keeps the unit's own value). Nothing else of the
unit is changed, except as said next. --drop-in adds more [Service] lines (to see
a check fail, e.g. --drop-in Type=simple).

What the agent runs from (the checkout, its venv, the interpreter behind it) must
be reachable inside the namespace and by the dynamic service user. When one lives
in a directory other users cannot enter (a pyenv under /root, mode 0700; a clone
in a mkdtemp directory), that directory is replaced, inside the namespace only,
by a world-traversable one holding just that tree. When one lives under /tmp
(a clone in a temporary directory), it is bound back into the namespace's own
/tmp, and a BindReadOnlyPaths= line in the drop-in shows it to the service
through its PrivateTmp=. The check says when it does either. A real install
belongs in neither place (install-service warns).

Exit status: 0 every check held; 1 a check failed (the message says which and
shows the journal); 2 systemd could not be booted here; 3 this machine lacks
something the check needs (root, systemd, unshare, nsenter, mosquitto, cgroup2).
Linux only, as root.
"""

import argparse
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time

# The checkout: its tests.harness starts the private broker (as the benchmarks' does), and the
# hardening check makes sure the service cannot write it.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from edge_agent.service import closed_directory  # noqa: E402
from fieldwatch.devservices.broker import Broker, BrokerError  # noqa: E402

SYSTEMD = "/lib/systemd/systemd"
UNIT = "edge-agent.service"
CONFIG = "/etc/edge-agent/config.toml"
STATE_LINK = "/var/lib/edge-agent"
STATE_REAL = "/var/lib/private/edge-agent"
DEVICE_ID = "systemd-check"
# Stand-ins for the targets the agent's unit (and its default dependencies) name: empty, so
# that starting the agent pulls in nothing else.
STAND_IN_TARGETS = ("sysinit", "basic", "multi-user", "network-online", "shutdown", "time-sync", "sockets",
                    "local-fs", "swap", "umount")
JOURNALD_UNITS = ("systemd-journald.service", "systemd-journald.socket", "systemd-journald-dev-log.socket")
HOST_SERVICES = ("postgres", "mosquitto")

VERBOSE = True


class CheckFailed(Exception):
    """A check did not hold: exit 1."""


class CannotBoot(Exception):
    """systemd could not be booted here: exit 2."""


class Interrupted(Exception):
    """SIGTERM or SIGHUP: stop at once, clean up, exit 1."""


class Missing(Exception):
    """A prerequisite is missing on this machine: exit 3."""


def say(msg):
    if VERBOSE:
        print(msg, flush=True)


REPORTED = []


def result(name, ok, detail):
    """Print one check's outcome as a line and as JSON (for tests): 'CHECK name: ok|FAILED detail'."""
    REPORTED.append(name)
    print("CHECK %s: %s %s" % (name, "ok" if ok else "FAILED", detail), flush=True)
    print("RESULT " + json.dumps({"check": name, "ok": ok, "detail": detail}), flush=True)


# ---- the host side ----------------------------------------------------------------------------

def host_services():
    """{pid: (name, start time, cmdline)} of the machine's own postgres/mosquitto (configured under /etc)."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/comm" % entry) as f:
                comm = f.read().strip()
            if comm not in HOST_SERVICES:
                continue
            with open("/proc/%s/cmdline" % entry, "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace").strip()
            with open("/proc/%s/stat" % entry) as f:
                start = f.read().rsplit(")", 1)[1].split()[19]
        except OSError:
            continue
        if "/etc/" in cmdline:
            found[int(entry)] = (comm, start, cmdline)
    return found


def cgroup2_root():
    for path in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if os.path.isfile(os.path.join(path, "cgroup.controllers")):
            return path
    raise Missing("no cgroup2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified")


def under(path, top):
    return path == top or path.startswith(top.rstrip("/") + "/")


def paths_to_expose(paths, bind_closed=True):
    """[(path, closed directory or None)] of `paths` that the namespace must put back.

    A path under /tmp would be hidden by the namespace's own /tmp; a path below a directory
    other users cannot enter (a pyenv under /root, mode 0700; a checkout in a mkdtemp
    directory) could not be run by the dynamic service user. Nested paths count once."""
    found = []
    for path in sorted(set(map(os.path.realpath, paths)), key=len):
        if any(under(path, p) for p, _c in found):
            continue
        closed = closed_directory(path) if bind_closed else None
        if under(path, "/tmp") or closed:
            found.append((path, closed))
    return found


def inner_script(work, exposed):
    """The shell script the namespace's first process runs before it becomes systemd.

    exposed: (path, closed) pairs from paths_to_expose(): each path is made reachable again
    after the namespace's own /tmp (and a tmpfs over its closed directory) would hide it."""
    unit_path = "/etc/systemd/system:/run/fw-units"
    lines = ["set -eu", "W=%s" % work, "mount --make-rprivate /",
             "mkdir -p $W/ns && mount -t tmpfs -o mode=755 fw-check $W/ns",
             "mkdir -p $W/ns/etc-up $W/ns/etc-work $W/ns/var-up $W/ns/var-work $W/ns/units $W/ns/dev",
             "cp $W/units/* $W/ns/units/",
             "mount -t overlay overlay -o lowerdir=/etc,upperdir=$W/ns/etc-up,workdir=$W/ns/etc-work /etc",
             "mount -t overlay overlay -o lowerdir=/var,upperdir=$W/ns/var-up,workdir=$W/ns/var-work /var",
             "mount -t tmpfs -o mode=755 fw-units /etc/systemd/system"]
    lines += [
        # /dev: a few nodes of our own, a console that is a file, new devpts/shm/mqueue.
        "mount -t tmpfs -o mode=755,nosuid fw-dev $W/ns/dev && cd $W/ns/dev",
        "mknod -m 666 null c 1 3; mknod -m 666 zero c 1 5; mknod -m 666 full c 1 7",
        "mknod -m 666 random c 1 8; mknod -m 666 urandom c 1 9; mknod -m 666 tty c 5 0",
        "touch console; mkdir pts shm mqueue; ln -s pts/ptmx ptmx; ln -s /proc/self/fd fd",
        "cd /",
        "mount --move $W/ns/dev /dev",
        "mount --bind $W/console.log /dev/console",
        "mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts /dev/pts",
        "mount -t tmpfs -o mode=1777,nosuid,nodev shm /dev/shm",
        "mount -t mqueue mqueue /dev/mqueue",
        "mount -t tmpfs -o mode=755,nosuid,nodev fw-run /run",
        "mkdir -p /run/fw-units /run/fw-empty && mount --bind $W/ns/units /run/fw-units",
    ]
    # Keep what the agent runs from (checkout, venv, interpreter) at hand under /run, then cover
    # /tmp with our own tmpfs and each closed directory with an open one, and put them back.
    for i, (path, _closed) in enumerate(exposed):
        lines.append("mkdir -p /run/fw-keep/%d && mount --bind %s /run/fw-keep/%d" % (i, path, i))
    for closed in sorted({c for _p, c in exposed if c and not under(c, "/tmp")}):
        lines.append("mount -t tmpfs -o mode=755 fw-open %s" % closed)
    lines.append("mount -t tmpfs -o mode=1777,nosuid,nodev fw-tmp /tmp")
    for i, (path, _closed) in enumerate(exposed):
        lines.append("mkdir -p %s && mount --bind /run/fw-keep/%d %s" % (path, i, path))
    lines += [
        # Read-only /sys and /proc/sys (systemd would raise fs.nr_open and set kernel.core_pattern,
        # which are not namespaced), and a cgroup2 of our own (its root is our cgroup namespace).
        "mount --bind /sys /sys && mount -o remount,bind,ro,nosuid,nodev,noexec /sys",
        "mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup",
        "mount --bind /proc/sys /proc/sys && mount -o remount,bind,ro /proc/sys",
        "if [ -e /proc/sysrq-trigger ]; then mount --bind /proc/sysrq-trigger /proc/sysrq-trigger && "
        "mount -o remount,bind,ro /proc/sysrq-trigger; fi",
        "exec env -i container=fieldwatch-systemd-check PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "
        "SYSTEMD_UNIT_PATH=%s SYSTEMD_GENERATOR_PATH=/run/fw-empty SYSTEMD_ENVIRONMENT_GENERATOR_PATH=/run/fw-empty "
        "%s --unit=fw-check.target --log-target=journal-or-kmsg --log-level=info --show-status=no" % (unit_path, SYSTEMD),
    ]
    return "\n".join(lines) + "\n"


def write_units(directory):
    os.makedirs(directory)
    for t in STAND_IN_TARGETS:
        with open(os.path.join(directory, t + ".target"), "w") as f:
            f.write("[Unit]\nDescription=%s.target (empty stand-in, systemd_check.py)\nDefaultDependencies=no\n" % t)
    with open(os.path.join(directory, "fw-check.target"), "w") as f:
        f.write("[Unit]\nDescription=systemd_check.py: the journal only\nDefaultDependencies=no\n"
                "Wants=%s\n" % " ".join(JOURNALD_UNITS))
    for u in JOURNALD_UNITS:
        src = os.path.join("/lib/systemd/system", u)
        if not os.path.exists(src):
            raise Missing("%s is missing (is systemd 250+ installed?)" % src)
        shutil.copy(src, directory)


class Namespace:
    """The booted systemd: .pid (PID 1 as the host sees it), .run(cmd) inside it."""

    def __init__(self, work, unshare_proc, cgroup):
        self.work, self.proc, self.cgroup = work, unshare_proc, cgroup
        self.pid = None

    def find_pid1(self, timeout):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                with open("/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)) as f:
                    kids = f.read().split()
                if kids:
                    self.pid = int(kids[0])
                    with open("/proc/%d/comm" % self.pid) as f:
                        if f.read().strip() == "systemd":
                            return self.pid
            except OSError:
                pass
            if self.proc.poll() is not None:
                return None
            time.sleep(0.02)
        return None

    def run(self, *cmd, check=True, timeout=30):
        r = subprocess.run(["nsenter", "-t", str(self.pid), "-m", "-p", "-u", "-i", "-C", *cmd],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                           env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0", "LANG": "C.UTF-8"})
        if check and r.returncode != 0:
            raise CheckFailed("%s failed (exit %d): %s" % (" ".join(cmd), r.returncode, r.stdout.strip()))
        return r.stdout

    def show(self, *props):
        out = self.run("systemctl", "show", UNIT, "-p", ",".join(props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, *args):
        return self.run("journalctl", "--no-pager", "-o", "short-monotonic", *args, check=False)

    def journal_json(self, *args):
        out = self.run("journalctl", "--no-pager", "-o", "json", *args, check=False)
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def host_pid(self, ns_pid):
        """The host's PID of a process the namespace calls ns_pid."""
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open("/proc/%s/status" % entry) as f:
                        for line in f:
                            if line.startswith("NSpid:"):
                                ids = line.split()[1:]
                                if len(ids) >= 2 and ids[0] != ids[-1] and int(ids[-1]) == ns_pid and \
                                        os.readlink("/proc/%s/ns/pid" % entry) == os.readlink(
                                            "/proc/%d/ns/pid" % self.pid):
                                    return int(entry)
                except OSError:
                    pass
        raise CheckFailed("no host process for PID %d of the namespace" % ns_pid)

    def path(self, path):
        """`path` as PID 1 of the namespace sees it, reachable from the host."""
        return "/proc/%d/root%s" % (self.pid, path)


def boot(work, cgroup_base, exposed):
    cgroup = os.path.join(cgroup_base, "fw-systemd-check-%d" % os.getpid())
    os.mkdir(cgroup)
    open(os.path.join(work, "console.log"), "w").close()
    script = os.path.join(work, "inner.sh")
    with open(script, "w") as f:
        f.write(inner_script(work, exposed))
    procs = os.path.join(cgroup, "cgroup.procs")

    def into_cgroup():
        with open(procs, "w") as f:
            f.write("0")
    log = open(os.path.join(work, "unshare.log"), "wb")
    proc = subprocess.Popen(["unshare", "--pid", "--fork", "--mount", "--uts", "--ipc", "--cgroup", "--mount-proc",
                             "sh", script], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=into_cgroup, start_new_session=True)
    ns = Namespace(work, proc, cgroup)
    try:
        return ns, wait_booted(ns, work, proc)
    except BaseException:
        teardown(ns, None)
        raise


def wait_booted(ns, work, proc):
    t0 = time.monotonic()
    if ns.find_pid1(15) is None:
        raise CannotBoot("systemd did not become PID 1 of the namespace (unshare: %s)\n%s" % (
            "exit status %s" % proc.poll() if proc.poll() is not None else "still running",
            read(os.path.join(work, "unshare.log"))))
    state = ""
    while time.monotonic() - t0 < 20:
        if proc.poll() is not None:
            break
        state = ns.run("systemctl", "is-system-running", check=False).strip()
        if state in ("running", "degraded"):
            break
        time.sleep(0.05)
    if state not in ("running", "degraded"):
        raise CannotBoot("systemd did not finish booting (is-system-running: %r)\n%s\n%s" % (
            state, read(os.path.join(work, "unshare.log")), read(os.path.join(work, "console.log"))))
    return time.monotonic() - t0


def read(path):
    try:
        with open(path, errors="replace") as f:
            return f.read()[-4000:]
    except OSError as e:
        return "(%s)" % e


def teardown(ns, broker):
    if ns is not None:
        if ns.proc.poll() is None:
            if ns.pid:
                try:
                    os.kill(ns.pid, signal.SIGKILL)     # PID 1 of a namespace: takes everything in it along
                except ProcessLookupError:
                    pass
            try:
                ns.proc.wait(10)
            except subprocess.TimeoutExpired:
                ns.proc.kill()
                ns.proc.wait(10)
        # The cgroup tree empties once the namespace's processes are reaped.
        end = time.monotonic() + 10
        while os.path.isdir(ns.cgroup) and time.monotonic() < end:
            for root, dirs, _ in os.walk(ns.cgroup, topdown=False):
                try:
                    os.rmdir(root)
                except OSError:
                    pass
            if os.path.isdir(ns.cgroup):
                time.sleep(0.1)
        if os.path.isdir(ns.cgroup):
            print("warning: could not remove the cgroup %s" % ns.cgroup, file=sys.stderr)
    if broker is not None:
        broker.cleanup()


# ---- the checks ---------------------------------------------------------------------------------

def wait_until(what, fn, timeout, interval=0.05):
    end = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > end:
            raise CheckFailed("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


def install_and_start(ns, port, watchdog_sec, drop_in, edge_agent):
    conf = textwrap.dedent("""\
        # written by tools/systemd_check.py
        [device]
        id = "%s"

        [mqtt]
        url = "mqtt://127.0.0.1:%d"

        [sensor]
        hardware = "sim"

        [gps]
        enabled = false

        [outbox]
        exit_drain_s = 1
        """ % (DEVICE_ID, port))
    lines = ["[Service]"]
    if watchdog_sec:
        lines.append("WatchdogSec=%g" % watchdog_sec)
    lines += drop_in
    # (written through /proc/PID/root: the namespace's /etc is an overlay only it sees)
    os.makedirs(ns.path("/etc/edge-agent"), exist_ok=True)
    with open(ns.path(CONFIG), "w") as f:
        f.write(conf)
    os.makedirs(ns.path("/etc/systemd/system/%s.d" % UNIT), exist_ok=True)
    if len(lines) > 1:
        with open(ns.path("/etc/systemd/system/%s.d/50-systemd-check.conf" % UNIT), "w") as f:
            f.write("\n".join(lines) + "\n")
    say("  drop-in: %s" % ("; ".join(lines[1:]) or "none"))
    # The real install: unit into /etc/systemd/system, daemon-reload, enable --now (which waits
    # for the start job, i.e. for READY=1). Meanwhile, watch the unit's state.
    cmd = ["nsenter", "-t", str(ns.pid), "-m", "-p", "-u", "-i", "-C", edge_agent, "install-service", "--config", CONFIG]
    t0 = time.monotonic()
    inst = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"})
    states = []
    while inst.poll() is None and time.monotonic() - t0 < 90:
        try:
            s = ns.show("ActiveState", "SubState", "MainPID")
        except CheckFailed:
            continue
        states.append((round(time.monotonic() - t0, 3), s.get("ActiveState"), s.get("SubState"), s.get("MainPID")))
    out = inst.communicate(timeout=60)[0]
    elapsed = time.monotonic() - t0
    say(textwrap.indent(out.rstrip(), "  | "))
    if inst.returncode != 0:
        result("ready", False, "install-service's `systemctl enable --now` failed: the unit never became active")
        raise CheckFailed("edge-agent install-service failed (exit %d) after %.1f s:\n%s\n%s\n%s" % (
            inst.returncode, elapsed, out, ns.run("systemctl", "status", "--no-pager", "-l", UNIT, check=False),
            ns.journal("-n", "40")))
    return states, elapsed


def check_ready(ns, states, elapsed):
    s = ns.show("Type", "ActiveState", "SubState", "StatusText", "MainPID", "ExecMainStartTimestampMonotonic",
                "ActiveEnterTimestampMonotonic", "NRestarts", "UnitFileState", "FragmentPath", "DropInPaths")
    transitions = []
    for t, a, sub, pid in states:
        if not transitions or transitions[-1][1:3] != (a, sub):
            transitions.append((t, a, sub, pid))
    say("  states while `systemctl enable --now` waited: %s" % ", ".join(
        "%s/%s@%.2fs" % (a, sub, t) for t, a, sub, pid in transitions))
    start = int(s["ExecMainStartTimestampMonotonic"])
    active = int(s["ActiveEnterTimestampMonotonic"])
    # The agent's own "started" line, logged before its first loop pass, which ends with READY=1. Its
    # timestamp is the agent's (the journal's could lag behind the READY=1 datagram); systemd's
    # monotonic ActiveEnter time is turned into wall-clock time with this process's clock.
    active_wall = time.time() - (time.monotonic() * 1e6 - active) / 1e6
    start_wall = time.time() - (time.monotonic() * 1e6 - start) / 1e6
    started_wall = None
    end = time.monotonic() + 5
    while started_wall is None and time.monotonic() < end:
        for e in ns.journal_json("-u", UNIT, "-b"):
            m = str(e.get("MESSAGE"))
            if "edge agent " in m and " started: boot " in m:
                try:
                    started_wall = time.mktime(time.strptime(m[:19], "%Y-%m-%d %H:%M:%S")) + int(m[20:23]) / 1e3
                except ValueError:
                    started_wall = int(e["__REALTIME_TIMESTAMP"]) / 1e6
                break
        else:
            time.sleep(0.1)
    problems = []
    if s["Type"] != "notify":
        problems.append("Type=%s, not notify" % s["Type"])
    if (s["ActiveState"], s["SubState"]) != ("active", "running"):
        problems.append("unit is %s (%s)" % (s["ActiveState"], s["SubState"]))
    if s["UnitFileState"] != "enabled":
        problems.append("unit file is %s, not enabled" % s["UnitFileState"])
    if not any(a == "activating" and sub == "start" and pid not in ("", "0") for _, a, sub, pid in states):
        problems.append("never seen `activating (start)` with a main process while it started")
    if started_wall is None:
        problems.append("no 'edge agent ... started' line in the journal")
    elif started_wall > active_wall + 0.002:     # the agent's stamp has millisecond resolution
        problems.append("active at +%.3f s after exec, before the agent had even started (+%.3f s): systemd did not "
                        "wait for READY=1" % (active_wall - start_wall, started_wall - start_wall))
    if not s["StatusText"].startswith("boot "):
        problems.append("no STATUS= text from the agent (StatusText=%r)" % s["StatusText"])
    detail = ("Type=%s, %s (%s) %.3f s after exec, %s after the agent's start line; STATUS=%r; unit %s (%s)" % (
        s["Type"], s["ActiveState"], s["SubState"], (active - start) / 1e6,
        "%.3f s" % (active_wall - started_wall) if started_wall else "?",
        s["StatusText"], s["FragmentPath"], s["UnitFileState"]))
    result("ready", not problems, "; ".join(problems) if problems else detail)
    if problems:
        raise CheckFailed("ready: " + "; ".join(problems) + "\n" + ns.journal("-n", "30"))
    return int(s["MainPID"])


def wait_active(ns, old_pid, timeout):
    def again():
        s = ns.show("ActiveState", "SubState", "MainPID", "NRestarts")
        if (s["ActiveState"], s["SubState"]) == ("active", "running") and s["MainPID"] not in ("0", str(old_pid)):
            return s
        return None
    return wait_until("the agent to run again", again, timeout, 0.1)


def check_watchdog(ns, pid, watchdog_s):
    s = ns.show("WatchdogUSec", "WatchdogTimestampMonotonic", "NRestarts")
    ping0 = int(s["WatchdogTimestampMonotonic"])
    say("  WatchdogUSec=%s; staying up for %.1f s (1.5 x WatchdogSec)..." % (s["WatchdogUSec"], 1.5 * watchdog_s))
    time.sleep(1.5 * watchdog_s)
    s2 = ns.show("ActiveState", "SubState", "MainPID", "NRestarts", "WatchdogTimestampMonotonic")
    pings_ok = int(s2["WatchdogTimestampMonotonic"]) > ping0
    alive = (s2["ActiveState"], s2["SubState"], s2["MainPID"], s2["NRestarts"]) == (
        "active", "running", str(pid), s["NRestarts"])
    detail = "same PID %d still active (running) after %.1f s, NRestarts=%s, last ping %s" % (
        pid, 1.5 * watchdog_s, s2["NRestarts"], "advanced" if pings_ok else "never advanced")
    result("watchdog-keepalive", alive and pings_ok, detail)
    if not (alive and pings_ok):
        raise CheckFailed("watchdog-keepalive: %r\n%s" % (s2, ns.journal("-n", "30")))
    # Freeze it: no more pings. systemd must kill it on the timeout and start it again.
    mono = ns.run("cat", "/proc/uptime").split()[0]
    t0 = time.monotonic()
    ns.run("kill", "-STOP", str(pid))
    say("  SIGSTOP to PID %d; waiting for the watchdog..." % pid)
    s3 = wait_active(ns, pid, watchdog_s + 15)
    gone = time.monotonic() - t0
    log = ns.journal("-u", UNIT, "--since", "-%ds" % int(gone + 5))
    timeout_line = [l for l in log.splitlines() if "Watchdog timeout" in l]
    ok = bool(timeout_line) and int(s3["NRestarts"]) == int(s2["NRestarts"]) + 1 and gone >= watchdog_s / 2 - 0.3
    detail = "SIGSTOP at uptime %s s; restarted as PID %s %.1f s later (NRestarts=%s); journal: %s" % (
        mono, s3["MainPID"], gone, s3["NRestarts"], timeout_line[0].split(": ", 1)[-1] if timeout_line else "no timeout")
    result("watchdog-timeout", ok, detail)
    if not ok:
        raise CheckFailed("watchdog-timeout: %s\n%s" % (detail, log))
    return int(s3["MainPID"]), int(s3["NRestarts"])


def check_restart(ns, pid, restarts):
    t0 = time.monotonic()
    ns.run("kill", "-KILL", str(pid))
    s = wait_active(ns, pid, 15)
    took = time.monotonic() - t0
    log = ns.journal("-u", UNIT, "--since", "-%ds" % int(took + 5))
    killed = [l for l in log.splitlines() if "status=9/KILL" in l]
    ok = bool(killed) and int(s["NRestarts"]) == restarts + 1
    detail = "SIGKILL to PID %d; running again as PID %s %.1f s later (NRestarts=%s); journal: %s" % (
        pid, s["MainPID"], took, s["NRestarts"], killed[0].split(": ", 1)[-1] if killed else "no exit line")
    result("restart", ok, detail)
    if not ok:
        raise CheckFailed("restart: %s\n%s" % (detail, log))
    return int(s["MainPID"])


def proc_status(host_pid):
    with open("/proc/%d/status" % host_pid) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def check_state(ns, pid):
    hp = ns.host_pid(pid)
    st = proc_status(hp)
    uid = int(st["Uid"].split()[0])
    link = os.readlink(ns.path(STATE_LINK)) if os.path.islink(ns.path(STATE_LINK)) else None
    info = os.stat(ns.path(STATE_REAL))
    db = ns.path(STATE_REAL + "/outbox.db")
    problems = []
    if link != "private/edge-agent":
        problems.append("%s is %s, not a link to private/edge-agent (DynamicUser's layout)" % (STATE_LINK, link))
    if not 61184 <= uid <= 65519:
        problems.append("the agent runs as uid %d, not a dynamic one (61184-65519)" % uid)
    if info.st_uid != uid:
        problems.append("the state directory belongs to uid %d, not the service's %d" % (info.st_uid, uid))
    if stat.S_IMODE(info.st_mode) != 0o750:
        problems.append("the state directory has mode %o, not 750 (StateDirectoryMode=)" % stat.S_IMODE(info.st_mode))
    if int(st["CapEff"], 16) or int(st["CapBnd"], 16) or st.get("NoNewPrivs") != "1":
        problems.append("capabilities or privileges left: CapEff=%s CapBnd=%s NoNewPrivs=%s" % (
            st["CapEff"], st["CapBnd"], st.get("NoNewPrivs")))
    records = None
    if not os.path.exists(db):
        problems.append("no outbox.db in %s" % STATE_REAL)
    else:
        # Opened as the agent would: its user, in its mount namespace, next to the running agent.
        code = ("import json, sqlite3; c = sqlite3.connect(%r, timeout=10); print(json.dumps(["
                "c.execute('PRAGMA integrity_check').fetchone()[0], sorted(r[0] for r in c.execute("
                "\"SELECT name FROM sqlite_master WHERE type='table'\"))]))" % (STATE_LINK + "/outbox.db"))
        r = subprocess.run(["nsenter", "-t", str(hp), "-m", "-S", str(uid), "-G", st["Gid"].split()[0],
                            sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True, timeout=30)
        try:
            integrity, tables = json.loads(r.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            integrity, tables = "could not read it: " + r.stdout.strip(), []
        if integrity != "ok":
            problems.append("outbox.db integrity_check: %s" % integrity)
        records = "tables " + ", ".join(sorted(tables))
        if os.stat(db).st_uid != uid:
            problems.append("outbox.db belongs to uid %d" % os.stat(db).st_uid)
    owner = ns.run("stat", "-c", "%U:%G %a", STATE_REAL, check=False).strip()
    detail = "%s -> %s (%s); agent uid %d, groups %s, CapEff=%s, NoNewPrivs=%s; outbox.db integrity ok, %s" % (
        STATE_LINK, link, owner, uid, st.get("Groups", "").strip(), st["CapEff"], st.get("NoNewPrivs"), records)
    result("state", not problems, "; ".join(problems) if problems else detail)
    if problems:
        raise CheckFailed("state: " + "; ".join(problems))


def mount_of(mountinfo, path):
    """(mount point, fstype, source, per-mount options) of the mount `path` lives on."""
    best = None
    for line in mountinfo.splitlines():
        left, right = line.split(" - ", 1)
        fields, (fstype, source) = left.split(), right.split()[:2]
        point = fields[4].encode().decode("unicode_escape")
        if path == point or path.startswith(point.rstrip("/") + "/"):
            if best is None or len(point) >= len(best[0]):
                best = (point, fstype, source, fields[5].split(","))
    return best


def check_hardening(ns, pid):
    hp = ns.host_pid(pid)
    st = proc_status(hp)
    uid, gid = st["Uid"].split()[0], st["Gid"].split()[0]
    targets = ["/", "/etc", "/usr", "/var", "/var/lib", "/opt", REPO, "/root"]
    with open("/proc/%d/mountinfo" % hp) as f:
        mountinfo = f.read()
    problems, lines, attempt = [], [], []
    for d in targets:
        point, fstype, source, opts = mount_of(mountinfo, d)
        # A write is tried only where it cannot reach the machine's own files: a read-only mount, or the
        # namespace's private overlays (/etc, /var). A writable mount of the machine's disk is a failure
        # by itself, and is not written to.
        if "ro" in opts or (fstype == "overlay" and point in ("/etc", "/var")):
            attempt.append(d)
        else:
            problems.append("%s is on a writable mount of the machine (%s %s on %s): not even tried" % (
                d, fstype, source, point))
    probe = ("for d in \"$@\"; do f=\"$d/.systemd-check-probe\"; "
             "if ( : > \"$f\" ) 2>/dev/null; then rm -f \"$f\"; echo \"$d writable\"; "
             "else echo \"$d $( ( : > \"$f\" ) 2>&1 | sed 's/.*: //' )\"; fi; done")
    for who, extra in (("root", []), ("uid %s" % uid, ["-S", uid, "-G", gid])):
        out = subprocess.run(["nsenter", "-t", str(hp), "-m", *extra, "sh", "-c", probe, "sh", *attempt, STATE_LINK],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30).stdout
        results = dict(line.split(" ", 1) for line in out.strip().splitlines() if " " in line)
        for d in attempt:
            if results.get(d) == "writable":
                problems.append("%s can write %s in the service's namespace" % (who, d))
        if results.get(STATE_LINK) != "writable":
            problems.append("%s cannot write the state directory: %s" % (who, results.get(STATE_LINK)))
        lines.append("%s: %s" % (who, ", ".join("%s %s" % (d, results.get(d)) for d in attempt + [STATE_LINK])))
    # PrivateTmp: a file in the namespace's /tmp is not in the service's.
    marker = "/tmp/systemd-check-marker"
    with open(ns.path(marker), "w") as f:
        f.write("x")
    private_tmp = not subprocess.run(["nsenter", "-t", str(hp), "-m", "test", "-e", marker]).returncode == 0
    if not private_tmp:
        problems.append("the service sees the system's /tmp (PrivateTmp)")
    for line in lines:
        say("  " + line)
    detail = "in the service's mount namespace, root and uid %s can write only %s; %s; /tmp private: %s" % (
        uid, STATE_LINK, lines[0].split(": ", 1)[1], private_tmp)
    result("hardening", not problems, "; ".join(problems) if problems else detail)
    if problems:
        raise CheckFailed("hardening: " + "; ".join(problems))


def check_contained(ns):
    units = ns.run("systemctl", "list-units", "--all", "--plain", "--no-legend", check=False)
    rows = [line.replace("\u25cf", " ").split() for line in units.splitlines() if line.strip()]
    names = sorted(r[0] for r in rows)
    # Units only named by others (After=gpsd.service...) show up as not-found and inactive: harmless.
    bad = ["%s (%s, %s)" % (r[0], r[1], r[2]) for r in rows if r[0].endswith(".service")
           and r[0] not in (UNIT, "systemd-journald.service") and (r[1], r[2]) != ("not-found", "inactive")]
    return names, bad


def main(argv=None):
    global VERBOSE
    p = argparse.ArgumentParser(
        prog="tools/systemd_check.py", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--watchdog-sec", type=float, default=3.0,
                   help="WatchdogSec= for the check, in a drop-in (default 3; 0 keeps the unit's 30 s: "
                        "the check then takes about 90 s)")
    p.add_argument("--drop-in", action="append", default=[], metavar="LINE",
                   help="an extra [Service] line for the unit's drop-in, e.g. Type=simple to see the ready "
                        "check fail (repeatable)")
    p.add_argument("--no-python-bind", action="store_true",
                   help="do not make a closed directory on the way to the checkout, venv or interpreter "
                        "(e.g. /root) enterable inside the namespace: shows what the dynamic service user "
                        "meets on this machine")
    p.add_argument("--keep", action="store_true",
                   help="leave the namespace running at the end and print how to enter it (kill PID 1 yourself); "
                        "the private broker stops with this script, so the agent is then offline, buffering")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the CHECK lines and errors")
    args = p.parse_args(argv)
    VERBOSE = not args.quiet

    def interrupted(signum, frame):
        raise Interrupted("interrupted by signal %d" % signum)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupted)      # so that the namespace and the broker are still cleaned up

    t_start = time.monotonic()
    ns = broker = work = None
    try:
        if sys.platform != "linux":
            raise Missing("Linux only")
        if os.geteuid() != 0:
            raise Missing("run it as root (it mounts and unshares namespaces)")
        for tool in ("unshare", "nsenter"):
            if not shutil.which(tool):
                raise Missing("%s is not installed (util-linux)" % tool)
        if not os.access(SYSTEMD, os.X_OK):
            raise Missing("%s is not installed (apt-get install systemd)" % SYSTEMD)
        edge_agent = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "edge-agent")
        if not os.access(edge_agent, os.X_OK):
            raise Missing("no edge-agent next to %s: run this with the project's venv Python" % sys.executable)
        cg = cgroup2_root()
        before = host_services()
        say("host services before: %s" % (", ".join("%s %d" % (v[0], k) for k, v in sorted(before.items())) or "none"))

        work = tempfile.mkdtemp(prefix="fw-systemd-check-")
        write_units(os.path.join(work, "units"))
        try:
            broker = Broker(autosave_interval=60).start()
        except BrokerError as e:
            if "not installed" in str(e):
                raise Missing(str(e)) from None
            raise CheckFailed("the private mosquitto did not start: %s" % e) from None
        port = broker.port
        say("private mosquitto: PID %d on 127.0.0.1:%d" % (broker.pid, port))

        exposed = paths_to_expose([sys.base_prefix, sys.prefix, REPO], bind_closed=not args.no_python_bind)
        for path, closed in exposed:
            say("note: the agent runs from %s%s%s: inside the namespace only, it is bound back %s." % (
                path, ", under /tmp (the namespace has a /tmp of its own)" if under(path, "/tmp") else "",
                ", below %s, which other users cannot enter" % closed if closed else "",
                "over an open directory" if closed else "into its /tmp"))
        version = subprocess.run([SYSTEMD, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
        say("booting %s (%s) as PID 1 of new pid/mount/uts/ipc/cgroup namespaces..." % (SYSTEMD, version))
        try:
            ns, took = boot(work, cg, exposed)
        except CheckFailed as e:
            raise CannotBoot(str(e)) from None
        say("  booted in %.2f s: host PID %d, cgroup %s" % (took, ns.pid, ns.cgroup))

        say("installing: edge-agent install-service --config %s (inside the namespace)" % CONFIG)
        # PrivateTmp= gives the service a /tmp of its own: what the agent runs from under /tmp
        # (a checkout in a temporary directory) has to be bound into it, read-only.
        binds = ["BindReadOnlyPaths=%s" % path for path, _c in exposed if under(path, "/tmp")]
        states, took = install_and_start(ns, port, args.watchdog_sec, binds + args.drop_in, edge_agent)
        say("  install-service returned after %.2f s" % took)
        pid = check_ready(ns, states, took)
        watchdog_s = int(ns.show("WatchdogUSec")["WatchdogUSec"].rstrip("s") or 0) if not args.watchdog_sec else \
            args.watchdog_sec
        # From here on a failed check is reported and the next one still runs (on the agent running then).
        failed = []

        def main_pid():
            def running():
                u = ns.show("MainPID", "SubState")
                return int(u["MainPID"]) if u["SubState"] == "running" and u["MainPID"] != "0" else None
            return wait_until("the agent to be running", running, 10, 0.1)

        for name, check in (("watchdog", lambda: check_watchdog(ns, main_pid(), watchdog_s)),
                            ("restart", lambda: check_restart(ns, main_pid(), int(ns.show("NRestarts")["NRestarts"]))),
                            ("state", lambda: check_state(ns, main_pid())),
                            ("hardening", lambda: check_hardening(ns, main_pid()))):
            before_check = len(REPORTED)
            try:
                check()
            except (CheckFailed, OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
                failed.append(name)
                if not any(r.startswith(name) for r in REPORTED[before_check:]) or not str(e).startswith(name):
                    result(name, False, "%s: %s" % (type(e).__name__, str(e).split("\n")[0]))
                print("systemd_check: %s: %s" % (name, e), file=sys.stderr)

        names, bad = check_contained(ns)
        after = host_services()
        changed = {k: v for k, v in before.items() if after.get(k) != v}
        ok = not bad and not changed
        result("host", ok, "this systemd ran no service but %s and journald (%d units known, all others "
               "mounts, slices, sockets, targets or not-found); host %s unchanged" % (UNIT, len(names),
            ", ".join("%s %d" % (v[0], k) for k, v in sorted(before.items())) or "(none running)")
            if ok else "foreign services %s; host processes gone or changed: %s" % (bad, changed))
        if not ok:
            failed.append("host")
        if failed:
            raise CheckFailed("%d check(s) failed: %s" % (len(failed), ", ".join(failed)))
        if args.keep:
            say("kept: enter with  nsenter -t %d -m -p -u -i -C bash ; stop with  kill -9 %d ; then rmdir -p "
                "the cgroup %s and rm -r %s (the private broker stops now: the agent goes offline)" % (
                    ns.pid, ns.pid, ns.cgroup, work))
            ns = work = None
        print("all checks passed in %.1f s" % (time.monotonic() - t_start), flush=True)
        return 0
    except Missing as e:
        print("systemd_check: cannot run here: %s" % e, file=sys.stderr)
        return 3
    except CannotBoot as e:
        print("systemd_check: systemd could not be booted here: %s" % e, file=sys.stderr)
        return 2
    except (CheckFailed, Interrupted, subprocess.TimeoutExpired, KeyboardInterrupt) as e:
        print("systemd_check: FAILED: %s" % e, file=sys.stderr)
        return 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
            signal.signal(sig, signal.SIG_IGN)      # let nothing cut the clean-up short
        try:
            teardown(ns, broker)
        finally:
            if work:
                shutil.rmtree(work, ignore_errors=True)
            if ns is not None or broker is not None:
                say("cleaned up: namespace and broker stopped, cgroup and temp dir removed")


if __name__ == "__main__":
    sys.exit(main())
