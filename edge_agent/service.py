"""`edge-agent install-service`: install the systemd unit, write a default config, enable the service.

The unit shipped in the package (edge_agent/systemd/edge-agent.service) is a
complete unit with default values; install() adapts it to this machine (with
fieldwatch/service.py, which `collector install-service` uses too):

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

import os
import re
import socket
from importlib import resources

from edge_agent import config as agent_config
from fieldwatch import config as cfg
from fieldwatch import service as shared
from fieldwatch.service import HOME_DIRS, PRIVATE_TMP_DIRS, UNIT_DIR, InstallError  # noqa: F401 (this module's API)
from fieldwatch.service import closed_directory, run_paths  # noqa: F401 (used by tests/harness/systemd.py)

UNIT_NAME = "edge-agent.service"
CONFIG_PATH = "/etc/edge-agent/config.toml"
SYSTEMCTL_COMMANDS = (("systemctl", "daemon-reload"), ("systemctl", "enable", "--now", UNIT_NAME))


def unit_template():
    """The unit file as shipped in the package."""
    return resources.files("edge_agent").joinpath("systemd", UNIT_NAME).read_text()


def agent_executable():
    """Path of the `edge-agent` console script for this Python (venv first, then PATH)."""
    return shared.console_script("edge-agent", "pip install 'fieldwatch[agent]'")


def render_unit(template, executable, config_path, user=None, group_exists=shared.group_exists):
    """(unit text, [notes]) for this machine; see the module docstring."""
    exec_start = "%s run --config %s --state-dir ${STATE_DIRECTORY}" % (
        shared.quote(executable), shared.quote(os.path.abspath(config_path)))
    return shared.adapt_unit(template, exec_start, run_paths(executable) + [config_path], user, group_exists,
                             groups_note="the agent cannot reach those devices here")


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


def install(config_path=CONFIG_PATH, user=None, unit_dir=UNIT_DIR, dry_run=False, out=print,
            executable=None):
    """Install (or with dry_run, describe) the service; raises InstallError with what to do."""
    return shared.install(SERVICE, config_path, user, unit_dir, dry_run, out, executable)


def _default_config():
    dev = default_device_id()
    return (default_config(dev), " (device id %r): set [mqtt] url and check [device] id" % dev,
            " (device id %r)" % dev)


def systemctl_plan(unit_dir, dry_run, systemctl, booted):
    """(run systemctl now?, lines to print): skipped for another unit dir, without systemctl or systemd, in dry runs."""
    return shared.systemctl_plan(unit_dir, dry_run, systemctl, booted, SYSTEMCTL_COMMANDS)


SERVICE = shared.Service(
    UNIT_NAME, "edge-agent install-service", SYSTEMCTL_COMMANDS,
    unit_text=lambda exe, config_path, user: render_unit(unit_template(), exe, config_path, user),
    executable=agent_executable, check_config=check_config, default_config=_default_config,
    done="installed and started; follow it with: journalctl -fu %s" % UNIT_NAME)
