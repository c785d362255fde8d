"""`edge-agent install-service`: install the systemd unit, write a default config, enable the service.

The unit shipped in the package (edge_agent/systemd/edge-agent.service) is a
complete unit with default values; install() adapts it to this machine:

* ExecStart= runs the `edge-agent` next to the running Python (the venv or
  system install this command came from) with --config FILE;
* User=USER with --user, else DynamicUser=yes (systemd makes a throw-away user
  owning /var/lib/edge-agent; nothing to create; install() warns when that user
  could not even reach the Python, e.g. a pyenv under /root, mode 0700);
* SupplementaryGroups= keeps only the groups this machine has (i2c and gpio
  exist on Raspberry Pi OS, not on a laptop) and says which it left out;
* ProtectHome=read-only instead of yes when the agent, the Python its #! line
  names (or where that symlink leads: a venv made from a pyenv Python runs
  /root/.pyenv/...) or its config live under /home, /root or /run/user (with yes
  the service could not even start: 203/EXEC, permission denied);
* a note when the agent or its config lives under /tmp or /var/tmp, which
  PrivateTmp=yes hides from the service.

Then it writes a default config if the file is absent (a present one is kept and
checked), and runs `systemctl daemon-reload` and `systemctl enable --now` unless
systemctl is missing, the machine was not booted with systemd, or the unit went
to a directory other than /etc/systemd/system (--unit-dir, for tests). With
dry_run nothing is written or run: every step is printed instead.
"""

import grp
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
from importlib import resources

from edge_agent import config as agent_config
from fieldwatch import config as cfg

UNIT_NAME = "edge-agent.service"
UNIT_DIR = "/etc/systemd/system"
CONFIG_PATH = "/etc/edge-agent/config.toml"
HOME_DIRS = ("/home", "/root", "/run/user")
PRIVATE_TMP_DIRS = ("/tmp", "/var/tmp")
SYSTEMCTL_COMMANDS = (("systemctl", "daemon-reload"), ("systemctl", "enable", "--now", UNIT_NAME))


class InstallError(Exception):
    """A user mistake or an unusable machine: the message says what to do."""


def unit_template():
    """The unit file as shipped in the package."""
    return resources.files("edge_agent").joinpath("systemd", UNIT_NAME).read_text()


def agent_executable():
    """Path of the `edge-agent` console script for this Python (venv first, then PATH)."""
    here = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), "edge-agent")
    if os.access(here, os.X_OK):
        return here
    found = shutil.which("edge-agent")
    if found:
        return os.path.abspath(found)
    raise InstallError("the edge-agent command is not installed next to %s nor on PATH; "
                       "install the package first: pip install 'fieldwatch[agent]'" % sys.executable)


def _quote(word):
    # systemd command-line quoting: plain if safe, else double quotes with \ and " escaped.
    if word and not re.search(r'[\s"\'\\$;%]', word):
        return word
    return '"%s"' % word.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$").replace("%", "%%")


def _under(path, dirs):
    path = os.path.abspath(path)
    return any(path == d or path.startswith(d + "/") for d in dirs)


def _under_home(path):
    return _under(path, HOME_DIRS)


def run_paths(executable):
    """What running `executable` needs: itself, the interpreter of its #! line, and where symlinks lead."""
    paths = [executable]
    try:
        with open(executable, "rb") as f:
            first = f.readline(1024)
    except OSError:
        first = b""
    if first.startswith(b"#!"):
        words = first[2:].decode(errors="replace").split()
        if words:
            paths.append(words[0])
    return paths + [p for p in map(os.path.realpath, paths) if p not in paths]


def closed_directory(path):
    """The first directory on the way to `path` that other users cannot enter (no o+x), or None."""
    parts = os.path.abspath(path).split("/")[1:]
    for i in range(1, len(parts)):
        d = "/" + "/".join(parts[:i])
        try:
            if not os.stat(d).st_mode & 0o001:
                return d
        except OSError:
            return None
    return None


def _group_exists(name):
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def render_unit(template, executable, config_path, user=None, group_exists=_group_exists):
    """(unit text, [notes]) for this machine; see the module docstring."""
    notes = []
    out = []
    needed = run_paths(executable) + [config_path]     # what the service must reach
    at_home = [p for p in needed if _under_home(p)]
    in_tmp = [p for p in needed if _under(p, PRIVATE_TMP_DIRS)]
    for line in template.splitlines():
        key = line.split("=", 1)[0] if "=" in line and not line.startswith("#") else None
        if key == "ExecStart":
            line = "ExecStart=%s run --config %s --state-dir ${STATE_DIRECTORY}" % (
                _quote(executable), _quote(os.path.abspath(config_path)))
        elif key == "DynamicUser" and user:
            line = "User=%s" % user
        elif key == "SupplementaryGroups":
            wanted = line.split("=", 1)[1].split()
            have = [g for g in wanted if group_exists(g)]
            missing = [g for g in wanted if g not in have]
            if missing:
                notes.append("groups %s do not exist on this machine: left out of SupplementaryGroups "
                             "(the agent cannot reach those devices here)" % ", ".join(missing))
            line = "SupplementaryGroups=%s" % " ".join(have) if have else "# SupplementaryGroups=%s (none exist here)" % (
                " ".join(wanted))
        elif key == "ProtectHome" and at_home:
            line = "ProtectHome=read-only"
            notes.append("%s lives under %s: ProtectHome=read-only instead of yes" % (at_home[0], ", ".join(HOME_DIRS)))
        elif key == "PrivateTmp" and line.split("=", 1)[1].strip() == "yes" and in_tmp:
            notes.append("%s is under %s, which PrivateTmp=yes replaces with a directory of the service's "
                         "own: the service will not find it (203/EXEC or a missing config). Install the "
                         "package and the config elsewhere, e.g. a venv in /opt" % (
                             in_tmp[0], " or ".join(PRIVATE_TMP_DIRS)))
        out.append(line)
    return "\n".join(out) + "\n", notes


def default_device_id(hostname=None):
    """A valid device id made from the host name ('Pi-Pump 3.local' -> 'pi-pump-3')."""
    name = (hostname or socket.gethostname()).split(".")[0].lower()
    name = re.sub(r"[^a-z0-9_-]+", "-", name).strip("-_")[:32]
    return name or "edge-agent"


def default_config(device_id):
    """The TOML text of a fresh /etc/edge-agent/config.toml."""
    return """# Fieldwatch edge agent, written by `edge-agent install-service`.
# Every section and key, with defaults and environment overrides: `edge-agent --help`.
# The service keeps its outbox in /var/lib/edge-agent (--state-dir in the unit).

[device]
id = "%s"

[mqtt]
url = "mqtt://127.0.0.1:1883"   # the broker, mqtt[s]://[user:password@]host[:port]

[sensor]
hardware = "real"               # "sim" for the simulated ADXL345
""" % device_id


def check_config(path):
    """Load the config file as the service will (no environment overrides); raise InstallError if bad."""
    try:
        agent_config.load(path, environ={})
    except cfg.ConfigError as e:
        raise InstallError("the config file is not usable by the service: %s\n  Fix it, then run "
                           "install-service again (edge-agent --help lists every key)." % e) from None


def _systemd_running():
    # sd_booted(3): systemd is PID 1 when this directory exists.
    return os.path.isdir("/run/systemd/system")


def install(config_path=CONFIG_PATH, user=None, unit_dir=UNIT_DIR, dry_run=False, out=print,
            executable=None):
    """Install (or with dry_run, describe) the service; raises InstallError with what to do."""
    if user:
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise InstallError("user %r does not exist: create it (useradd --system --no-create-home %s) "
                               "or leave out --user for a dynamic service user" % (user, user)) from None
    config_present = os.path.exists(config_path)
    if config_present:
        check_config(config_path)        # before anything is written
    exe = executable or agent_executable()
    unit_text, notes = render_unit(unit_template(), exe, config_path, user)
    if not user:
        closed = [(p, closed_directory(p)) for p in run_paths(exe) + [config_path]]
        closed = [(p, d) for p, d in closed if d]
        if closed:
            notes.append("the dynamic service user cannot enter %s (on the way to %s): the service will fail "
                         "(203/EXEC, or no config). Install the package with a Python other users can run "
                         "(e.g. a venv made from /usr/bin/python3 outside /root) and keep the config where "
                         "they can read it, or use --user" % (closed[0][1], closed[0][0]))
    unit_path = os.path.join(unit_dir, UNIT_NAME)
    verb = "would write" if dry_run else "writing"
    for note in notes:
        out("note: " + note)

    out("%s the unit %s:" % (verb, unit_path))
    if dry_run:
        out(unit_text.rstrip("\n"))
    else:
        _write(unit_path, unit_text, 0o644)

    if config_present:
        out("keeping the existing config %s" % config_path)
    elif dry_run:
        out("would write a default config %s (device id %r)" % (config_path, default_device_id()))
    else:
        out("writing a default config %s (device id %r): set [mqtt] url and check [device] id"
            % (config_path, default_device_id()))
        _write(config_path, default_config(default_device_id()), 0o644)
        check_config(config_path)

    run_them, lines = systemctl_plan(unit_dir, dry_run, shutil.which("systemctl"), _systemd_running())
    for line in lines:
        out(line)
    if not run_them:
        return 0
    for c in SYSTEMCTL_COMMANDS:
        out("running: " + " ".join(c))
        r = subprocess.run(list(c), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise InstallError("%s failed (exit %d): %s\n  See: journalctl -u %s" % (
                " ".join(c), r.returncode, r.stdout.strip(), UNIT_NAME))
    out("installed and started; follow it with: journalctl -fu %s" % UNIT_NAME)
    return 0


def systemctl_plan(unit_dir, dry_run, systemctl, booted):
    """(run systemctl now?, lines to print): skipped for another unit dir, without systemctl or systemd, in dry runs."""
    steps = " && ".join(" ".join(c) for c in SYSTEMCTL_COMMANDS)
    if os.path.abspath(unit_dir) != UNIT_DIR:
        return False, ["the unit went to %s, not %s: not running systemctl (%s)" % (unit_dir, UNIT_DIR, steps)]
    why = "no systemctl here" if systemctl is None else None if booted else "PID 1 is not systemd"
    if why:
        return False, ["%s: the unit %s but not enabled or started; on a systemd machine run: %s"
                       % (why, "would be written" if dry_run else "is written", steps)]
    if dry_run:
        return False, ["would run: " + " ".join(c) for c in SYSTEMCTL_COMMANDS]
    return True, []


def _write(path, text, mode):
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:
        hint = " (run it as root: sudo edge-agent install-service)" if isinstance(e, PermissionError) else ""
        raise InstallError("cannot write %s: %s%s" % (path, e.strerror or e, hint)) from None
