"""Check the edge agent's systemd unit under a real systemd, booted as PID 1 in private namespaces.

    sudo .venv/bin/python -m fieldwatch.tools.systemd_check        # about 15 s; exit 0 when every check holds
    sudo .venv/bin/python -m fieldwatch.tools.systemd_check --drop-in Type=simple     # see the ready check fail

Runs the checks of tests/e2e/test_agent_systemd.py (pytest, from the checkout): the sandbox
(tests/harness/systemd.py) starts a private Mosquitto, boots /lib/systemd/systemd as PID 1 of
new PID, mount, UTS, IPC and cgroup namespaces that can start nothing of the machine's and write
nothing outside themselves, runs the real `edge-agent install-service` inside it with the
simulated sensor, and checks from systemd's own state and journal:

  ready      Type=notify: `activating` until the agent's READY=1, `active (running)` after
             its start-up log line, with its STATUS= text;
  watchdog   WATCHDOG=1 keeps it running past WatchdogSec; SIGSTOP gets it killed on
             the watchdog timeout and restarted;
  restart    SIGKILL gets it restarted (Restart=always);
  state      /var/lib/edge-agent is made by StateDirectory=, owned by the DynamicUser=
             user, and holds a sound outbox.db; no capabilities, no_new_privs;
  hardening  inside the service's mount namespace, even root cannot write /, /etc,
             /usr, /var, the checkout or /root, only the state directory; its /tmp is private;
  host       the machine's own postgres and mosquitto are the same processes as before.

Then the namespace's PID 1 (and with it everything in it) and the broker are killed, and its
cgroup and temp dir removed. WatchdogSec=30 would make the watchdog check take a minute: a
drop-in sets it to --watchdog-sec. With --all, the checks also run on units broken on
purpose (each must catch its break; about 30 s more).

Exit status: pytest's (0 every check held or was skipped, with the reason, because this
machine lacks root, systemd, unshare, nsenter, mosquitto or cgroup2; 1 a check failed);
2 with one line if there is no checkout or no pytest. Linux only, as root.
"""

import argparse
import os
import subprocess
import sys

from fieldwatch.devservices.checkout import NoCheckout, require_checkout

TESTS = "tests/e2e/test_agent_systemd.py"


def main(argv=None):
    """Run the systemd checks with pytest; its exit status."""
    p = argparse.ArgumentParser(prog="python -m fieldwatch.tools.systemd_check", description=__doc__,
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
    p.add_argument("--all", action="store_true", help="also run the checks on units broken on purpose")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the outcome of each check")
    args = p.parse_args(argv)
    try:
        root = require_checkout("the systemd check")
    except NoCheckout as e:
        print("systemd_check: %s" % e, file=sys.stderr)
        return 2
    try:
        import pytest  # noqa: F401  (only to say clearly that it is missing)
    except ImportError:
        print("systemd_check: pytest is not installed: pip install -e '.[dev]'", file=sys.stderr)
        return 2
    env = dict(os.environ, FIELDWATCH_SYSTEMD_DROP_IN="\n".join(args.drop_in),
               FIELDWATCH_SYSTEMD_WATCHDOG_SEC="%g" % args.watchdog_sec,
               FIELDWATCH_SYSTEMD_NO_PYTHON_BIND="1" if args.no_python_bind else "0")
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rs", TESTS]
    cmd += ["-q"] if args.quiet else ["-v", "-s"]
    if not args.all:
        cmd += ["-k", "not broken_unit and not puts_back"]
    return subprocess.call(cmd, cwd=str(root), env=env)


if __name__ == "__main__":
    sys.exit(main())
