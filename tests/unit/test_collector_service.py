"""`collector install-service` (unit and config into a directory of the test's own) and the start-up backoff."""

import configparser
import os
import subprocess
import sys

import pytest

from collector import service
from collector.startup import Backoff

COLLECTOR = os.path.join(os.path.dirname(sys.executable), "collector")


def _unit(text):
    p = configparser.ConfigParser(strict=False, interpolation=None)
    p.optionxform = str
    p.read_string(text)
    return p


def test_collector_install_service_writes_unit_and_default_config_elsewhere_without_systemctl(tmp_path):
    units, conf = tmp_path / "units", tmp_path / "etc" / "collector.toml"
    r = subprocess.run([COLLECTOR, "install-service", "--unit-dir", str(units), "--config", str(conf)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "not running systemctl (systemctl daemon-reload && systemctl enable --now --no-block collector.service)" \
        in r.stdout
    unit = _unit((units / "collector.service").read_text())
    s = unit["Service"]
    assert s["ExecStart"] == "%s run --config %s" % (COLLECTOR, conf)
    assert (s["Type"], s["NotifyAccess"], s["Restart"], s["TimeoutStartSec"]) == ("notify", "main", "always", "infinity")
    assert float(s["WatchdogSec"]) > 0 and s["DynamicUser"] == "yes" and s["NoNewPrivileges"] == "yes"
    assert s["ProtectSystem"] == "strict" and s["CapabilityBoundingSet"] == ""
    assert unit["Unit"]["StartLimitIntervalSec"] == "0"
    service.check_config(str(conf))     # the default config loads as the service will load it
    assert 'storage = "auto"' in conf.read_text()
    # Run again: the config is kept, and checked.
    r = subprocess.run([COLLECTOR, "install-service", "--unit-dir", str(units), "--config", str(conf)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "keeping the existing config" in r.stdout


def test_collector_install_service_dry_run_changes_nothing_and_a_bad_config_stops_it(tmp_path):
    units, conf = tmp_path / "units", tmp_path / "collector.toml"
    printed = []
    assert service.install(str(conf), unit_dir=str(units), dry_run=True, out=printed.append,
                           executable="/opt/fieldwatch/bin/collector") == 0
    assert not units.exists() and not conf.exists()
    text = "\n".join(printed)
    assert "\nExecStart=/opt/fieldwatch/bin/collector run --config %s\n" % conf in text
    assert "would write a default config %s" % conf in printed
    conf.write_text('[database]\nstorage = "hypertable"\n')
    with pytest.raises(service.InstallError, match="storage"):
        service.install(str(conf), unit_dir=str(units), out=printed.append, executable="/opt/fieldwatch/bin/collector")
    assert not units.exists(), "nothing written before the config is checked"


def test_collector_install_service_plan_on_a_systemd_machine_does_not_block_on_the_start():
    assert service.SYSTEMCTL_COMMANDS[-1] == ("systemctl", "enable", "--now", "--no-block", "collector.service")


def test_collector_startup_backoff_doubles_to_its_cap_with_jitter():
    low = Backoff(first_s=0.5, cap_s=15, jitter=0.2, uniform=lambda a, b: a)
    high = Backoff(first_s=0.5, cap_s=15, jitter=0.2, uniform=lambda a, b: b)
    assert [round(low.next_s(), 3) for _ in range(8)] == [0.4, 0.8, 1.6, 3.2, 6.4, 12.0, 12.0, 12.0]
    assert [round(high.next_s(), 3) for _ in range(8)] == [0.6, 1.2, 2.4, 4.8, 9.6, 15.0, 15.0, 15.0]
    b = Backoff()
    delays = [b.next_s() for _ in range(50)]
    assert max(delays) <= 15.0 and len(set(delays[10:])) > 1, "capped, and jittered even at the cap"
    b.reset()
    assert b.next_s() <= 0.6
