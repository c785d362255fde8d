"""The edge agent's unit under a real systemd: tools/systemd_check.py boots systemd as PID 1 in private namespaces.

The check installs the unit with `edge-agent install-service` inside that systemd and
verifies READY=1, the watchdog, restarts, StateDirectory/DynamicUser and the hardening
(see its --help). Here it runs once as is, and with the unit broken in ways each check
must catch, so that a check that cannot fail would show. It needs root, unshare and
systemd; without them it exits 3 and the tests are skipped.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

CHECK = Path(__file__).resolve().parents[2] / "tools" / "systemd_check.py"
ALL_CHECKS = ("ready", "watchdog-keepalive", "watchdog-timeout", "restart", "state", "hardening", "host")


def run_check(*args):
    """(exit status, {check: (ok, detail)}, output) of one systemd_check.py run."""
    if os.geteuid() != 0:
        pytest.skip("the systemd check needs root (namespaces, mounts)")
    proc = subprocess.Popen([sys.executable, str(CHECK), "-q", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        stdout, stderr = proc.communicate(timeout=150)
    except subprocess.TimeoutExpired:
        # SIGTERM, not SIGKILL: the check then still takes down its namespace and broker.
        proc.terminate()
        stdout, stderr = proc.communicate(timeout=60)
        pytest.fail("the systemd check took over 150 s:\n%s%s" % (stdout, stderr))
    if proc.returncode == 3:
        pytest.skip("this machine cannot run the systemd check: " + stderr.strip())
    results = {}
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            res = json.loads(line[len("RESULT "):])
            results[res["check"]] = (res["ok"], res["detail"])
    return proc.returncode, results, stdout + stderr


def test_real_systemd_runs_the_installed_unit():
    code, results, out = run_check()
    assert code == 0, out
    assert set(results) == set(ALL_CHECKS), out
    assert all(ok for ok, _ in results.values()), out
    assert "Type=notify, active (running)" in results["ready"][1]
    assert "Watchdog timeout" in results["watchdog-timeout"][1]
    assert "status=9/KILL" in results["restart"][1]
    assert "outbox.db integrity ok" in results["state"][1]


@pytest.mark.parametrize("drop_in, failing", [
    # The agent never gets $NOTIFY_SOCKET, so never says READY=1: the start must time out.
    (["UnsetEnvironment=NOTIFY_SOCKET", "TimeoutStartSec=4"], "ready"),
    # systemd does not wait for READY=1: active before the agent has even started.
    (["Type=simple"], "ready"),
    # Root with the whole system writable: no dynamic state directory, and writable mounts.
    (["DynamicUser=no", "ProtectSystem=no"], "hardening"),
])
def test_the_checks_catch_a_broken_unit(drop_in, failing):
    code, results, out = run_check(*[a for line in drop_in for a in ("--drop-in", line)])
    assert code == 1, out
    assert failing in results and not results[failing][0], out
    # Whatever failed, the machine's services were not touched and the namespace was taken down.
    assert results.get("host", (True, ""))[0], out
    assert "could not remove the cgroup" not in out, out


def test_what_the_namespace_puts_back():
    """A clone under /tmp is bound back into the namespace's own /tmp; one below a closed directory too."""
    import shutil
    import tempfile
    from fieldwatch.tools.systemd_check import paths_to_expose
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
