"""The edge agent's unit under a real systemd, booted as PID 1 in private namespaces (tests/harness/systemd.py).

A sandbox is booted once (TestShippedUnit) and the unit installed in it with the real
`edge-agent install-service`; each check then reads systemd's own state and journal:

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
  host       this systemd ran nothing of the machine's, whose own postgres and mosquitto
             are the same processes as before.

The same checks then run on units broken on purpose, each in a sandbox of its own, so that
a check that cannot fail would show. They need root, unshare and systemd; without them
they are skipped, saying what is missing. `python -m fieldwatch.tools.systemd_check` runs
them for a person; FIELDWATCH_SYSTEMD_DROP_IN (lines), FIELDWATCH_SYSTEMD_WATCHDOG_SEC and
FIELDWATCH_SYSTEMD_NO_PYTHON_BIND=1 change that sandbox (see its --help).
"""

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time

import pytest

from tests.harness.systemd import (REPO, STATE_LINK, STATE_REAL, UNIT, Missing, Sandbox, foreign_services, mount_of,
                                   paths_to_expose, proc_status, say, wait_active)


def make_sandbox(watchdog_sec=3.0, bind_closed=True):
    """A booted Sandbox; skips the test if this machine cannot run one."""
    try:
        return Sandbox(watchdog_sec=watchdog_sec, bind_closed=bind_closed)
    except Missing as e:
        pytest.skip("this machine cannot boot the systemd sandbox: %s" % e)


@pytest.fixture(scope="class")
def installed():
    """(Sandbox, Install): the unit installed and started once for the checks of TestShippedUnit."""
    drop_in = [line for line in os.environ.get("FIELDWATCH_SYSTEMD_DROP_IN", "").splitlines() if line.strip()]
    sb = make_sandbox(watchdog_sec=float(os.environ.get("FIELDWATCH_SYSTEMD_WATCHDOG_SEC", "3")),
                      bind_closed=os.environ.get("FIELDWATCH_SYSTEMD_NO_PYTHON_BIND") != "1")
    try:
        yield sb, sb.install(drop_in)
    finally:
        sb.cleanup()
    assert sb.cgroup_left is None, "could not remove the cgroup %s" % sb.cgroup_left


def running(installed):
    """The sandbox, once install-service has succeeded (else the check fails at once)."""
    sb, inst = installed
    if inst.returncode != 0:
        pytest.fail("install-service failed (exit %d), nothing to check:\n%s" % (inst.returncode, inst.output))
    return sb


# ---- the checks: (problems, detail) -------------------------------------------------------------

def ready_problems(sb, inst):
    """Type=notify: activating until READY=1, active (running) after the agent's start line, with STATUS=."""
    if inst.returncode != 0:
        return (["install-service's `systemctl enable --now` failed (exit %d): the unit never became active"
                 % inst.returncode], inst.output + inst.failure)
    ns = sb.ns
    s = ns.show("Type", "ActiveState", "SubState", "StatusText", "MainPID", "ExecMainStartTimestampMonotonic",
                "ActiveEnterTimestampMonotonic", "NRestarts", "UnitFileState", "FragmentPath", "DropInPaths")
    transitions = []
    for t, a, sub, pid in inst.states:
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
    if not any(a == "activating" and sub == "start" and pid not in ("", "0") for _, a, sub, pid in inst.states):
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
    return problems, detail + ("\n" + ns.journal("-n", "30") if problems else "")


def hardening_problems(sb, pid):
    """Inside the service's mount namespace, root and the service user can write only the state directory."""
    ns = sb.ns
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
    return problems, detail


def host_problems(sb):
    """This systemd ran no service but the agent and journald; the machine's own services are unchanged."""
    names, bad = foreign_services(sb.ns)
    changed = sb.host_changed()
    problems = (["foreign services %s" % bad] if bad else []) + (
        ["host processes gone or changed: %s" % changed] if changed else [])
    detail = "this systemd ran no service but %s and journald (%d units known); host %s unchanged" % (
        UNIT, len(names), ", ".join("%s %d" % (v[0], k) for k, v in sorted(sb.host_before.items())) or "(none running)")
    return problems, detail


# ---- the unit as shipped -----------------------------------------------------------------------

class TestShippedUnit:
    """The unit as install-service writes it, installed once (the class's sandbox goes before the broken units')."""

    def test_systemd_ready_only_after_the_agent_says_so(self, installed):
        sb, inst = installed
        problems, detail = ready_problems(sb, inst)
        assert not problems, "; ".join(problems) + "\n" + detail
        assert "Type=notify, active (running)" in detail


    def test_systemd_watchdog_pings_keep_the_agent_running(self, installed):
        sb = running(installed)
        ns, pid, watchdog_s = sb.ns, sb.main_pid(), sb.watchdog_s()
        s = ns.show("WatchdogUSec", "WatchdogTimestampMonotonic", "NRestarts")
        say("  WatchdogUSec=%s; staying up for %.1f s (1.5 x WatchdogSec)..." % (s["WatchdogUSec"], 1.5 * watchdog_s))
        time.sleep(1.5 * watchdog_s)
        s2 = ns.show("ActiveState", "SubState", "MainPID", "NRestarts", "WatchdogTimestampMonotonic")
        assert int(s2["WatchdogTimestampMonotonic"]) > int(s["WatchdogTimestampMonotonic"]), \
            "the last watchdog ping never advanced: %r\n%s" % (s2, ns.journal("-n", "30"))
        assert (s2["ActiveState"], s2["SubState"], s2["MainPID"], s2["NRestarts"]) == (
            "active", "running", str(pid), s["NRestarts"]), "%r\n%s" % (s2, ns.journal("-n", "30"))


    def test_systemd_watchdog_timeout_kills_and_restarts_a_frozen_agent(self, installed):
        sb = running(installed)
        ns, pid, watchdog_s = sb.ns, sb.main_pid(), sb.watchdog_s()
        restarts = int(ns.show("NRestarts")["NRestarts"])
        # Freeze it: no more pings. systemd must kill it on the timeout and start it again.
        mono = ns.run("cat", "/proc/uptime").split()[0]
        t0 = time.monotonic()
        ns.run("kill", "-STOP", str(pid))
        say("  SIGSTOP to PID %d; waiting for the watchdog..." % pid)
        s3 = wait_active(ns, pid, watchdog_s + 15)
        gone = time.monotonic() - t0
        log = ns.journal("-u", UNIT, "--since", "-%ds" % int(gone + 5))
        timeout_line = [line for line in log.splitlines() if "Watchdog timeout" in line]
        detail = "SIGSTOP at uptime %s s; restarted as PID %s %.1f s later (NRestarts=%s); journal: %s" % (
            mono, s3["MainPID"], gone, s3["NRestarts"], timeout_line[0].split(": ", 1)[-1] if timeout_line else "no timeout")
        assert timeout_line and int(s3["NRestarts"]) == restarts + 1 and gone >= watchdog_s / 2 - 0.3, detail + "\n" + log
        assert "Watchdog timeout" in detail


    def test_systemd_restarts_a_killed_agent(self, installed):
        sb = running(installed)
        ns, pid = sb.ns, sb.main_pid()
        restarts = int(ns.show("NRestarts")["NRestarts"])
        t0 = time.monotonic()
        ns.run("kill", "-KILL", str(pid))
        s = wait_active(ns, pid, 15)
        took = time.monotonic() - t0
        log = ns.journal("-u", UNIT, "--since", "-%ds" % int(took + 5))
        killed = [line for line in log.splitlines() if "status=9/KILL" in line]
        detail = "SIGKILL to PID %d; running again as PID %s %.1f s later (NRestarts=%s); journal: %s" % (
            pid, s["MainPID"], took, s["NRestarts"], killed[0].split(": ", 1)[-1] if killed else "no exit line")
        assert killed and int(s["NRestarts"]) == restarts + 1, detail + "\n" + log
        assert "status=9/KILL" in detail


    def test_systemd_state_directory_belongs_to_the_dynamic_user(self, installed):
        sb = running(installed)
        ns = sb.ns
        hp = ns.host_pid(sb.main_pid())
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
        assert os.path.exists(db), "no outbox.db in %s" % STATE_REAL
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
        if os.stat(db).st_uid != uid:
            problems.append("outbox.db belongs to uid %d" % os.stat(db).st_uid)
        owner = ns.run("stat", "-c", "%U:%G %a", STATE_REAL, check=False).strip()
        detail = "%s -> %s (%s); agent uid %d, groups %s, CapEff=%s, NoNewPrivs=%s; outbox.db integrity %s, tables %s" % (
            STATE_LINK, link, owner, uid, st.get("Groups", "").strip(), st["CapEff"], st.get("NoNewPrivs"), integrity,
            ", ".join(sorted(tables)))
        assert not problems, "; ".join(problems) + "\n" + detail
        assert "outbox.db integrity ok" in detail


    def test_systemd_hardening_leaves_only_the_state_directory_writable(self, installed):
        sb = running(installed)
        problems, detail = hardening_problems(sb, sb.main_pid())
        assert not problems, "; ".join(problems) + "\n" + detail


    def test_systemd_runs_nothing_of_the_machine(self, installed):
        sb, _inst = installed
        problems, detail = host_problems(sb)
        assert not problems, "; ".join(problems) + "\n" + detail


# ---- units broken on purpose: each check must catch its break --------------------------------------

@pytest.mark.parametrize("drop_in, failing", [
    # The agent never gets $NOTIFY_SOCKET, so never says READY=1: the start must time out.
    (["UnsetEnvironment=NOTIFY_SOCKET", "TimeoutStartSec=4"], "ready"),
    # systemd does not wait for READY=1: active before the agent has even started.
    (["Type=simple"], "ready"),
    # Root with the whole system writable: no dynamic state directory, and writable mounts.
    (["DynamicUser=no", "ProtectSystem=no"], "hardening"),
])
def test_systemd_checks_catch_a_broken_unit(drop_in, failing):
    sb = make_sandbox()
    try:
        inst = sb.install(drop_in)
        ready, ready_detail = ready_problems(sb, inst)
        if failing == "ready":
            assert ready, "the ready check passed a unit with %s: %s" % (drop_in, ready_detail)
        else:
            assert not ready, "; ".join(ready) + "\n" + ready_detail
            problems, detail = hardening_problems(sb, sb.main_pid())
            assert problems, "the hardening check passed a unit with %s: %s" % (drop_in, detail)
        # Whatever failed, the machine's services were not touched ...
        problems, detail = host_problems(sb)
        assert not problems, "; ".join(problems) + "\n" + detail
    finally:
        sb.cleanup()
    # ... and the namespace was taken down.
    assert sb.cgroup_left is None, "could not remove the cgroup %s" % sb.cgroup_left


def test_what_the_namespace_puts_back():
    """A clone under /tmp is bound back into the namespace's own /tmp; one below a closed directory too."""
    base = tempfile.mkdtemp(prefix="fw-expose-", dir="/tmp")     # (pytest's tmp_path is below a 0700 directory)
    try:
        os.chmod(base, 0o755)
        opened = os.path.join(base, "open", "main")
        os.makedirs(os.path.join(opened, ".venv"))
        closed = os.path.join(base, "closed")
        os.makedirs(os.path.join(closed, "main"))
        os.chmod(closed, 0o700)
        # The venv inside the checkout counts once; /usr needs nothing.
        assert paths_to_expose([opened, os.path.join(opened, ".venv"), "/usr"]) == [(opened, None)]
        inside = os.path.join(closed, "main")
        assert paths_to_expose([inside]) == [(inside, closed)]
        assert paths_to_expose([inside], bind_closed=False) == [(inside, None)]
        os.chmod(closed, 0o755)
    finally:
        shutil.rmtree(base)
    if os.stat("/root").st_mode & 0o001 == 0 and os.path.isdir("/root/.pyenv"):
        assert paths_to_expose(["/root/.pyenv"]) == [("/root/.pyenv", "/root")]
