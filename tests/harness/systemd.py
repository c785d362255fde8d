"""A real systemd booted as PID 1 in private namespaces, with the edge agent's unit installed in it.

    sb = Sandbox(watchdog_sec=3)        # private Mosquitto, systemd booted (~1 s); Missing if it cannot be
    inst = sb.install(drop_in=[...])    # `edge-agent install-service` inside it: unit, daemon-reload, enable --now
    sb.ns.show("MainPID"); sb.ns.journal("-u", UNIT); sb.main_pid()
    sb.cleanup()                        # kill its PID 1 (and everything in it), the broker, cgroup and temp dir

What the sandbox is, from a clean state:

  1. a private Mosquitto (fieldwatch.devservices.broker: temp dir, free port on 127.0.0.1);
  2. /lib/systemd/systemd as PID 1 of new PID, mount, UTS, IPC and cgroup
     namespaces (`unshare`), with `container=` set, a cgroup2 subtree of its own, and
     private /run, /tmp, /dev, /etc/systemd/system, overlays on /etc and /var, a
     read-only /sys and /proc/sys. $SYSTEMD_UNIT_PATH holds only the private
     /etc/systemd/system and a handful of stand-in targets plus journald, and there
     are no generators: this systemd can start nothing of the machine's (no
     postgresql, mosquitto, gpsd...), and it writes nothing outside its namespaces;
  3. install() writes /etc/edge-agent/config.toml inside it (simulated sensor, GPS off,
     the private broker) and runs the real `edge-agent install-service`, which writes the
     unit to /etc/systemd/system and runs `systemctl daemon-reload` and
     `systemctl enable --now edge-agent.service` against that systemd.

The checks of the unit (tests/e2e/test_agent_systemd.py) read systemd's own state and
journal through `Namespace`. WatchdogSec=30 would make the watchdog check take a minute: a
drop-in sets it to `watchdog_sec` (0 keeps the unit's own value); nothing else of the unit
is changed, except by `drop_in` lines and as said next.

What the agent runs from (the checkout, its venv, the interpreter behind it) must
be reachable inside the namespace and by the dynamic service user. When one lives
in a directory other users cannot enter (a pyenv under /root, mode 0700; a clone
in a mkdtemp directory), that directory is replaced, inside the namespace only,
by a world-traversable one holding just that tree. When one lives under /tmp
(a clone in a temporary directory), it is bound back into the namespace's own
/tmp, and a BindReadOnlyPaths= line in the drop-in shows it to the service
through its PrivateTmp=. The sandbox says when it does either. A real install
belongs in neither place (install-service warns).

Linux only, as root. Missing (a prerequisite is absent: the tests skip) and CannotBoot
(systemd would not boot here: a failure) say why in one line. Cleaned up like the dev
services: by cleanup(), at interpreter exit, and by a reaper if the process dies.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time

from fieldwatch.service import closed_directory
from fieldwatch.devservices import Reaper, register, unregister
from fieldwatch.devservices.broker import Broker, BrokerError
from fieldwatch.devservices.checkout import REPO_ROOT

# The checkout: the agent runs from it, and the hardening check makes sure the service cannot write it.
REPO = str(REPO_ROOT)

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


class CheckFailed(AssertionError):
    """A check of the unit did not hold (the message says what was seen)."""


class CannotBoot(RuntimeError):
    """systemd could not be booted here."""


class Missing(RuntimeError):
    """A prerequisite is missing on this machine (root, systemd, unshare, nsenter, mosquitto, cgroup2)."""


def say(msg):
    """Progress for a person (pytest shows it with a failure, or with -s)."""
    print(msg, flush=True)


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
    """The cgroup2 mount point of the machine; Missing if there is none."""
    for path in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified"):
        if os.path.isfile(os.path.join(path, "cgroup.controllers")):
            return path
    raise Missing("no cgroup2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified")


def under(path, top):
    """True if `path` is `top` or below it."""
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
    """The stand-in targets and journald's units for $SYSTEMD_UNIT_PATH, in `directory`."""
    os.makedirs(directory)
    for t in STAND_IN_TARGETS:
        with open(os.path.join(directory, t + ".target"), "w") as f:
            f.write("[Unit]\nDescription=%s.target (empty stand-in, tests/harness/systemd.py)\nDefaultDependencies=no\n" % t)
    with open(os.path.join(directory, "fw-check.target"), "w") as f:
        f.write("[Unit]\nDescription=tests/harness/systemd.py: the journal only\nDefaultDependencies=no\n"
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
        """Wait up to `timeout` seconds for unshare's child to be systemd: its host PID, or None."""
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
        """Run a command inside the namespace: its output (CheckFailed on a non-zero exit with check)."""
        r = subprocess.run(["nsenter", "-t", str(self.pid), "-m", "-p", "-u", "-i", "-C", *cmd],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout,
                           env={"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                                "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0", "LANG": "C.UTF-8"})
        if check and r.returncode != 0:
            raise CheckFailed("%s failed (exit %d): %s" % (" ".join(cmd), r.returncode, r.stdout.strip()))
        return r.stdout

    def show(self, *props, unit=UNIT):
        """{property: value} of the agent's unit, or of `unit` (`systemctl show -p`)."""
        out = self.run("systemctl", "show", unit, "-p", ",".join(props))
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, *args):
        """journalctl's text output (short-monotonic) inside the namespace."""
        return self.run("journalctl", "--no-pager", "-o", "short-monotonic", *args, check=False)

    def journal_json(self, *args):
        """journalctl's entries as dicts."""
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
    """Boot systemd as PID 1 of new namespaces in a cgroup of its own: (Namespace, seconds it took)."""
    cgroup = os.path.join(cgroup_base, "fw-systemd-check-%d-%s" % (os.getpid(), os.path.basename(work)))
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
    """The last 4000 characters of a text file, or why it cannot be read."""
    try:
        with open(path, errors="replace") as f:
            return f.read()[-4000:]
    except OSError as e:
        return "(%s)" % e


def teardown(ns, broker):
    """Kill the namespace's PID 1 (and so everything in it), remove its cgroup, clean up the broker.

    Returns the cgroup if it could not be removed, else None."""
    left = None
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
            left = ns.cgroup
            print("warning: could not remove the cgroup %s" % ns.cgroup, file=sys.stderr)
    if broker is not None:
        broker.cleanup()
    return left


# ---- the checks ---------------------------------------------------------------------------------
# ---- waiting on and reading systemd ------------------------------------------------------------

def wait_until(what, fn, timeout, interval=0.05):
    """Poll fn() until it returns something truthy (returned); CheckFailed after `timeout` seconds."""
    end = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > end:
            raise CheckFailed("timed out after %.0f s waiting for %s" % (timeout, what))
        time.sleep(interval)


class Install:
    """What one `edge-agent install-service` inside the namespace did.

    returncode, output: of install-service (its `systemctl enable --now` waits for READY=1);
    elapsed: seconds it took; states: (seconds, ActiveState, SubState, MainPID) seen meanwhile;
    failure: on a non-zero exit, `systemctl status` and the journal's tail, else ""."""

    def __init__(self, returncode, output, elapsed, states, failure=""):
        self.returncode, self.output, self.elapsed, self.states, self.failure = (
            returncode, output, elapsed, states, failure)


def install_and_start(ns, port, watchdog_sec, drop_in, edge_agent):
    """Write the agent's config and drop-in inside the namespace and run the real install-service: an Install."""
    conf = textwrap.dedent("""\
        # written by tests/harness/systemd.py
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
    failure = ""
    if inst.returncode != 0:
        failure = "%s\n%s" % (ns.run("systemctl", "status", "--no-pager", "-l", UNIT, check=False),
                               ns.journal("-n", "40"))
    return Install(inst.returncode, out, elapsed, states, failure)


def wait_active(ns, old_pid, timeout):
    """Wait until the unit is active (running) again with a main PID other than old_pid: its properties."""
    def again():
        s = ns.show("ActiveState", "SubState", "MainPID", "NRestarts")
        if (s["ActiveState"], s["SubState"]) == ("active", "running") and s["MainPID"] not in ("0", str(old_pid)):
            return s
        return None
    return wait_until("the agent to run again", again, timeout, 0.1)


def proc_status(host_pid):
    """/proc/PID/status as a dict."""
    with open("/proc/%d/status" % host_pid) as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


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


def foreign_services(ns):
    """(every unit the namespace's systemd knows, the services it runs besides the agent and journald)."""
    units = ns.run("systemctl", "list-units", "--all", "--plain", "--no-legend", check=False)
    rows = [line.replace("\u25cf", " ").split() for line in units.splitlines() if line.strip()]
    names = sorted(r[0] for r in rows)
    # Units only named by others (After=gpsd.service...) show up as not-found and inactive: harmless.
    bad = ["%s (%s, %s)" % (r[0], r[1], r[2]) for r in rows if r[0].endswith(".service")
           and r[0] not in (UNIT, "systemd-journald.service") and (r[1], r[2]) != ("not-found", "inactive")]
    return names, bad



class Sandbox:
    """A private Mosquitto and a real systemd booted as PID 1 in private namespaces (see the module docstring).

    watchdog_sec: WatchdogSec= of the drop-in install() writes (0: the unit's own).
    bind_closed:  make a closed directory on the way to the checkout, venv or interpreter (e.g. /root)
                  enterable inside the namespace; False shows what the dynamic service user meets.
    """

    def __init__(self, watchdog_sec=3.0, bind_closed=True):
        self.watchdog_sec = watchdog_sec
        self.ns = self.broker = self.work = self._reaper = None
        self.cgroup_left = None
        if sys.platform != "linux":
            raise Missing("Linux only")
        if os.geteuid() != 0:
            raise Missing("run it as root (it mounts and unshares namespaces)")
        for tool in ("unshare", "nsenter"):
            if not shutil.which(tool):
                raise Missing("%s is not installed (util-linux)" % tool)
        if not os.access(SYSTEMD, os.X_OK):
            raise Missing("%s is not installed (apt-get install systemd)" % SYSTEMD)
        self.edge_agent = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "edge-agent")
        if not os.access(self.edge_agent, os.X_OK):
            raise Missing("no edge-agent next to %s: run this with the project's venv Python" % sys.executable)
        cg = cgroup2_root()
        self.host_before = host_services()
        say("host services before: %s" % (", ".join("%s %d" % (v[0], k) for k, v in sorted(self.host_before.items()))
                                          or "none"))
        register(self)
        try:
            self.work = tempfile.mkdtemp(prefix="fw-systemd-check-")
            write_units(os.path.join(self.work, "units"))
            try:
                self.broker = Broker(autosave_interval=60).start()
            except BrokerError as e:
                if "not installed" in str(e):
                    raise Missing(str(e)) from None
                raise CannotBoot("the private mosquitto did not start: %s" % e) from None
            say("private mosquitto: PID %d on 127.0.0.1:%d" % (self.broker.pid, self.broker.port))
            self.exposed = paths_to_expose([sys.base_prefix, sys.prefix, REPO], bind_closed=bind_closed)
            for path, closed in self.exposed:
                say("note: the agent runs from %s%s%s: inside the namespace only, it is bound back %s." % (
                    path, ", under /tmp (the namespace has a /tmp of its own)" if under(path, "/tmp") else "",
                    ", below %s, which other users cannot enter" % closed if closed else "",
                    "over an open directory" if closed else "into its /tmp"))
            version = subprocess.run([SYSTEMD, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
            say("booting %s (%s) as PID 1 of new pid/mount/uts/ipc/cgroup namespaces..." % (SYSTEMD, version))
            try:
                self.ns, took = boot(self.work, cg, self.exposed)
            except CheckFailed as e:
                raise CannotBoot(str(e)) from None
            # If this process dies without cleanup(), a reaper kills PID 1 (and with it the namespace).
            pid1 = os.path.join(self.work, "pid1")
            with open(pid1, "w") as f:
                f.write("%d\n" % self.ns.pid)
            self._reaper = Reaper(pidfiles=[pid1], rmtree=self.work)
            say("  booted in %.2f s: host PID %d, cgroup %s" % (took, self.ns.pid, self.ns.cgroup))
        except BaseException:
            self.cleanup()
            raise

    def install(self, drop_in=()):
        """Run `edge-agent install-service` inside the namespace with these extra [Service] lines: an Install."""
        say("installing: edge-agent install-service --config %s (inside the namespace)" % CONFIG)
        # PrivateTmp= gives the service a /tmp of its own: what the agent runs from under /tmp
        # (a checkout in a temporary directory) has to be bound into it, read-only.
        binds = ["BindReadOnlyPaths=%s" % path for path, _c in self.exposed if under(path, "/tmp")]
        inst = install_and_start(self.ns, self.broker.port, self.watchdog_sec, binds + list(drop_in), self.edge_agent)
        say("  install-service returned after %.2f s (exit %d)" % (inst.elapsed, inst.returncode))
        return inst

    def watchdog_s(self):
        """The unit's WatchdogSec= in seconds, as the drop-in set it (or the unit's own)."""
        if self.watchdog_sec:
            return self.watchdog_sec
        return int(self.ns.show("WatchdogUSec")["WatchdogUSec"].rstrip("s") or 0)

    def main_pid(self, timeout=10):
        """The agent's main PID once the unit is running (CheckFailed after `timeout` seconds)."""
        def running():
            u = self.ns.show("MainPID", "SubState")
            return int(u["MainPID"]) if u["SubState"] == "running" and u["MainPID"] != "0" else None
        return wait_until("the agent to be running", running, timeout, 0.1)

    def host_changed(self):
        """The machine's own postgres/mosquitto processes that are gone or changed since the sandbox was made."""
        after = host_services()
        return {k: v for k, v in self.host_before.items() if after.get(k) != v}

    def cleanup(self):
        """Kill PID 1 of the namespace (and everything in it) and the broker; remove the cgroup and temp dir."""
        ns, broker, self.ns, self.broker = self.ns, self.broker, None, None
        try:
            if ns is not None or broker is not None:
                self.cgroup_left = teardown(ns, broker)
        finally:
            if self._reaper is not None:
                self._reaper.release()
                self._reaper = None
            if self.work:
                shutil.rmtree(self.work, ignore_errors=True)
                self.work = None
            unregister(self)
