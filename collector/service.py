"""`collector install-service`: install the collector's systemd unit, write a default config, enable the service.

The unit shipped in the package (collector/systemd/collector.service) is a
complete unit with default values; install() adapts it to this machine with
fieldwatch/service.py (as `edge-agent install-service` does): ExecStart= runs
the `collector` next to the running Python with --config FILE, User=USER with
--user (else DynamicUser=yes), ProtectHome=read-only when the program or its
config live under /home, /root or /run/user, and notes for what PrivateTmp=yes
or a closed directory would hide from the service.

Then it writes a default config if the file is absent (a present one is kept
and checked as the service will load it), and runs `systemctl daemon-reload`
and `systemctl enable --now --no-block collector.service`: --no-block because
the collector waits for its database and broker without a time limit (the
unit is "activating" until then, `systemctl status collector` says what it
waits for), and install-service should not hang on a database that is not
there yet. Nothing runs without systemctl or systemd, for another --unit-dir,
or with dry_run (every step is printed instead).
"""

import os
from importlib import resources

from fieldwatch import config as cfg
from fieldwatch import service as shared
from fieldwatch.service import UNIT_DIR, InstallError  # noqa: F401 (this module's API)

UNIT_NAME = "collector.service"
CONFIG_PATH = "/etc/fieldwatch/collector.toml"
SYSTEMCTL_COMMANDS = (("systemctl", "daemon-reload"), ("systemctl", "enable", "--now", "--no-block", UNIT_NAME))
COMMAND = "collector install-service"

DEFAULT_CONFIG = """# Fieldwatch collector, written by `collector install-service`.
# Every section and key, with defaults and environment overrides: `collector --help`.
# Passwords and tokens are better kept in /etc/fieldwatch/collector.env (mode 0600, read by
# systemd as root), e.g. DATABASE_URL=postgresql://fieldwatch:secret@db.example/fieldwatch

[database]
url = "postgresql://postgres@127.0.0.1:5432/fieldwatch"
storage = "auto"                 # auto, timescaledb or partitioned (docs/collector.md, "Storage")

[mqtt]
url = "mqtt://127.0.0.1:1883"    # the broker, mqtt[s]://[user:password@]host[:port]

[web]
listen = "127.0.0.1:8080"        # status page, API, /healthz, /readyz, /metrics
"""


def unit_template():
    """The unit file as shipped in the package."""
    return resources.files("collector").joinpath("systemd", UNIT_NAME).read_text()


def collector_executable():
    """Path of the `collector` console script for this Python (venv first, then PATH)."""
    return shared.console_script("collector", "pip install 'fieldwatch[collector]'")


def render_unit(template, executable, config_path, user=None):
    """(unit text, [notes]) for this machine."""
    exec_start = "%s run --config %s" % (shared.quote(executable), shared.quote(os.path.abspath(config_path)))
    return shared.adapt_unit(template, exec_start, shared.run_paths(executable) + [config_path], user)


def check_config(path):
    """Load the config file as the service will (no environment overrides); raise InstallError if bad."""
    from collector.cli import SCHEMA
    try:
        cfg.load(SCHEMA, path, "COLLECTOR", environ={})
    except cfg.ConfigError as e:
        raise InstallError("the config file is not usable by the service: %s\n  Fix it, then run "
                           "install-service again (collector --help lists every key)." % e) from None


def install(config_path=CONFIG_PATH, user=None, unit_dir=UNIT_DIR, dry_run=False, out=print, executable=None):
    """Install (or with dry_run, describe) the service; raises InstallError with what to do."""
    return shared.install(SERVICE, config_path, user, unit_dir, dry_run, out, executable)


SERVICE = shared.Service(
    UNIT_NAME, COMMAND, SYSTEMCTL_COMMANDS,
    unit_text=lambda exe, config_path, user: render_unit(unit_template(), exe, config_path, user),
    executable=collector_executable, check_config=check_config,
    default_config=lambda: (DEFAULT_CONFIG, ": set [database] url and [mqtt] url", ""),
    done="installed and starting: active once its database and broker answer (systemctl status %s says what it "
         "waits for); follow it with: journalctl -fu %s" % (UNIT_NAME, UNIT_NAME))
