"""What `edge-agent install-service` and `collector install-service` share: adapt a shipped unit, write it, run systemctl.

Each service ships a complete unit with default values (edge_agent/systemd/,
collector/systemd/); adapt_unit() fits it to this machine:

* ExecStart= is the line the caller gives (its console script next to the
  running Python, with --config FILE);
* User=USER with --user, else DynamicUser=yes (systemd makes a throw-away user);
* SupplementaryGroups= keeps only the groups this machine has and says which it left out;
* ProtectHome=read-only instead of yes when the program, the Python its #! line
  names (or where that symlink leads: a venv made from a pyenv Python runs
  /root/.pyenv/...) or its config live under /home, /root or /run/user (with yes
  the service could not even start: 203/EXEC, permission denied);
* a note when one of them lives under /tmp or /var/tmp, which PrivateTmp=yes
  hides from the service, or below a directory the dynamic user cannot enter.

systemctl_plan() says whether `systemctl daemon-reload` and `systemctl enable
--now` run: not without systemctl, not when the machine was not booted with
systemd, not when the unit went to a directory other than /etc/systemd/system
(--unit-dir, for tests), not in a dry run.

install() is the one install flow (user and config checked first, unit, default
config, systemctl); each service describes itself with a Service.
"""

import grp
import os
import pwd
import re
import shutil
import subprocess
import sys

UNIT_DIR = "/etc/systemd/system"
HOME_DIRS = ("/home", "/root", "/run/user")
PRIVATE_TMP_DIRS = ("/tmp", "/var/tmp")


class InstallError(Exception):
    """A user mistake or an unusable machine: the message says what to do."""


def console_script(name, package_hint):
    """Path of the console script `name` for this Python (venv first, then PATH); InstallError if absent."""
    here = os.path.join(os.path.dirname(os.path.abspath(sys.executable)), name)
    if os.access(here, os.X_OK):
        return here
    found = shutil.which(name)
    if found:
        return os.path.abspath(found)
    raise InstallError("the %s command is not installed next to %s nor on PATH; "
                       "install the package first: %s" % (name, sys.executable, package_hint))


def quote(word):
    """systemd command-line quoting: plain if safe, else double quotes with \\ and \" escaped."""
    if word and not re.search(r'[\s"\'\\$;%]', word):
        return word
    return '"%s"' % word.replace("\\", "\\\\").replace('"', '\\"').replace("$", "$$").replace("%", "%%")


def under(path, dirs):
    """True if `path` is one of `dirs` or below one."""
    path = os.path.abspath(path)
    return any(path == d or path.startswith(d + "/") for d in dirs)


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


def group_exists(name):
    """True if the group exists on this machine."""
    try:
        grp.getgrnam(name)
        return True
    except KeyError:
        return False


def adapt_unit(template, exec_start, needed, user=None, group_exists=group_exists,
               groups_note="the service cannot reach those devices here"):
    """(unit text, [notes]): the shipped unit fitted to this machine; see the module docstring.

    exec_start: the whole ExecStart= value; needed: the paths the service must reach.
    """
    notes = []
    out = []
    at_home = [p for p in needed if under(p, HOME_DIRS)]
    in_tmp = [p for p in needed if under(p, PRIVATE_TMP_DIRS)]
    for line in template.splitlines():
        key = line.split("=", 1)[0] if "=" in line and not line.startswith("#") else None
        if key == "ExecStart":
            line = "ExecStart=" + exec_start
        elif key == "DynamicUser" and user:
            line = "User=%s" % user
        elif key == "SupplementaryGroups":
            wanted = line.split("=", 1)[1].split()
            have = [g for g in wanted if group_exists(g)]
            missing = [g for g in wanted if g not in have]
            if missing:
                notes.append("groups %s do not exist on this machine: left out of SupplementaryGroups (%s)"
                             % (", ".join(missing), groups_note))
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


def dynamic_user_note(paths):
    """A note when the dynamic service user cannot enter a directory on the way to one of `paths`, else None."""
    closed = [(p, closed_directory(p)) for p in paths]
    closed = [(p, d) for p, d in closed if d]
    if not closed:
        return None
    return ("the dynamic service user cannot enter %s (on the way to %s): the service will fail "
            "(203/EXEC, or no config). Install the package with a Python other users can run "
            "(e.g. a venv made from /usr/bin/python3 outside /root) and keep the config where "
            "they can read it, or use --user" % (closed[0][1], closed[0][0]))


def systemd_running():
    """sd_booted(3): systemd is PID 1 when /run/systemd/system exists."""
    return os.path.isdir("/run/systemd/system")


def systemctl_plan(unit_dir, dry_run, systemctl, booted, commands):
    """(run systemctl now?, lines to print): skipped for another unit dir, without systemctl or systemd, in dry runs."""
    steps = " && ".join(" ".join(c) for c in commands)
    if os.path.abspath(unit_dir) != UNIT_DIR:
        return False, ["the unit went to %s, not %s: not running systemctl (%s)" % (unit_dir, UNIT_DIR, steps)]
    why = "no systemctl here" if systemctl is None else None if booted else "PID 1 is not systemd"
    if why:
        return False, ["%s: the unit %s but not enabled or started; on a systemd machine run: %s"
                       % (why, "would be written" if dry_run else "is written", steps)]
    if dry_run:
        return False, ["would run: " + " ".join(c) for c in commands]
    return True, []


def run_systemctl(commands, unit_name, out=print):
    """Run each systemctl command; InstallError (with the journalctl hint) on the first failure."""
    for c in commands:
        out("running: " + " ".join(c))
        r = subprocess.run(list(c), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if r.returncode != 0:
            raise InstallError("%s failed (exit %d): %s\n  See: journalctl -u %s" % (
                " ".join(c), r.returncode, r.stdout.strip(), unit_name))


def write_file(path, text, mode, command="install-service"):
    """Write `text` to `path` atomically with `mode`; InstallError saying to run `command` as root on EACCES."""
    directory = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(directory, exist_ok=True)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as e:
        hint = " (run it as root: sudo %s)" % command if isinstance(e, PermissionError) else ""
        raise InstallError("cannot write %s: %s%s" % (path, e.strerror or e, hint)) from None


class Service:
    """What install() needs to know of one service; collector/service.py and edge_agent/service.py make one each.

    unit_name, command ("edge-agent install-service", for messages), commands (the
    systemctl steps), and callables: unit_text(executable, config_path, user) ->
    (unit text, [notes]); executable() -> path of its console script; check_config(path)
    raising InstallError; default_config() -> (TOML text, what to say when it is
    written, what to say in a dry run); done -> the line printed once started.
    """

    def __init__(self, unit_name, command, commands, unit_text, executable, check_config, default_config, done):
        self.unit_name, self.command, self.commands = unit_name, command, commands
        self.unit_text, self.executable, self.check_config = unit_text, executable, check_config
        self.default_config, self.done = default_config, done


def install(service, config_path, user=None, unit_dir=UNIT_DIR, dry_run=False, out=print, executable=None):
    """Install (or with dry_run, describe) `service`'s unit and default config, then enable and start it.

    Checks the user and an existing config before anything is written; writes the unit,
    the config if absent (then checks it as the service will load it), and runs the
    systemctl steps where systemctl_plan() says so. Returns 0; InstallError says what to do.
    """
    if user:
        try:
            pwd.getpwnam(user)
        except KeyError:
            raise InstallError("user %r does not exist: create it (useradd --system --no-create-home %s) "
                               "or leave out --user for a dynamic service user" % (user, user)) from None
    config_present = os.path.exists(config_path)
    if config_present:
        service.check_config(config_path)        # before anything is written
    exe = executable or service.executable()
    unit_text, notes = service.unit_text(exe, config_path, user)
    if not user:
        note = dynamic_user_note(run_paths(exe) + [config_path])
        if note:
            notes.append(note)
    unit_path = os.path.join(unit_dir, service.unit_name)
    for note in notes:
        out("note: " + note)

    out("%s the unit %s:" % ("would write" if dry_run else "writing", unit_path))
    if dry_run:
        out(unit_text.rstrip("\n"))
    else:
        write_file(unit_path, unit_text, 0o644, service.command)

    if config_present:
        out("keeping the existing config %s" % config_path)
    else:
        text, written, planned = service.default_config()
        if dry_run:
            out("would write a default config %s%s" % (config_path, planned))
        else:
            out("writing a default config %s%s" % (config_path, written))
            write_file(config_path, text, 0o644, service.command)
            service.check_config(config_path)

    run_them, lines = systemctl_plan(unit_dir, dry_run, shutil.which("systemctl"), systemd_running(),
                                     service.commands)
    for line in lines:
        out(line)
    if not run_them:
        return 0
    run_systemctl(service.commands, service.unit_name, out)
    out(service.done)
    return 0
