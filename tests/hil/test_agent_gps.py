"""GPS in the edge agent (edge_agent/gps.py) against a real gpsd fed by gpsfake.

Every receiver log in tests/data/nmea is replayed through gpsfake into a real gpsd
(its own port and control socket), and the fixes our reader hands out are compared
with gpsd's own decoding of the same log in the matching .chk file: one fix per
reporting cycle (the cycle's last TPV report), mode, time, latitude, longitude,
altitude MSL, speed and track. Then gpsd is killed and restarted under the reader,
the reader runs with no gpsd at all, and the real edge-agent process stores fixes
in its outbox and publishes valid `fix` messages.

gpsd 3.22 (Debian 12) moves dates that lie before its build's GPS week forward by
1024 weeks (its week-rollover correction), so replaying the 2007-2015 logs gives
times exactly 1024 weeks after the .chk's (which a newer gpsd wrote). The test
accepts exactly that shift, the same for every fix of a log, and nothing else.
"""

import datetime
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from edge_agent.gps import EpochTracker, GpsReader, choose_time, fix_from_tpv, tpv_time_ms
from fieldwatch.devservices.collector import CollectorProcess
from fieldwatch.devservices.ports import free_port
from fieldwatch.wire import codec, topics
from tests.harness.listener import DeviceListener
from tests.harness.waiting import wait_for

NMEA = Path(__file__).resolve().parents[1] / "data" / "nmea"
LOGS = sorted(p.name for p in NMEA.glob("*.log"))
ROLLOVER_MS = 1024 * 7 * 86400 * 1000


# ---- gpsfake ------------------------------------------------------------------------

class GpsFake:
    """A real gpsd, started by gpsfake on a private port and control socket, fed from a log.

    stepped=True holds every sentence back (gpsfake -i) until feed(): the test first
    makes sure gpsd has opened the fake device, so no sentence is lost.
    """

    def __init__(self, log, workdir, port=None, once=True, cycle=0.001, stepped=True):
        if shutil.which("gpsfake") is None:
            pytest.fail("gpsfake is not installed: the Debian package gpsd-clients (scripts/setup.sh)")
        self.log = str(NMEA / log)
        self.port = port or free_port()
        self.workdir = workdir
        # -D 2: gpsd logs devices and clients (kept in gpsfake.log, shown when a test fails)
        self.args = ["gpsfake", "-q", "-D", "2", "-P", str(self.port), "-c", str(cycle), "-W", "60"]
        self.args += (["-1"] if once else []) + (["-i"] if stepped else ["-n"]) + [self.log]
        self.stepped = stepped
        self.proc = None
        self.errlog = None

    def start(self):
        os.makedirs(self.workdir, exist_ok=True)
        self.errlog = open(os.path.join(self.workdir, "gpsfake.log"), "ab")
        # TMPDIR: gpsfake puts gpsd's control socket there; a private one per test.
        self.proc = subprocess.Popen(self.args, env=dict(os.environ, TMPDIR=self.workdir),
                                     stdin=subprocess.PIPE if self.stepped else subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=self.errlog, start_new_session=True)
        return self

    def wait_device(self, timeout=15):
        """Wait until gpsd has opened the fake GPS (asked over gpsd's own protocol)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
                    f = s.makefile("rw")
                    f.readline()                                  # VERSION
                    f.write('?WATCH={"enable":true}\n')           # like a client: gpsd opens its devices
                    f.flush()
                    while time.monotonic() < end:
                        if self.proc.poll() is not None:
                            raise RuntimeError("gpsfake exited (%s): %s" % (self.proc.returncode, self.errors()))
                        f.write('?WATCH={"enable":true}\n?DEVICES;\n')   # (again: opens a device added since)
                        f.flush()
                        msg = json.loads(f.readline())
                        while msg.get("class") != "DEVICES":
                            msg = json.loads(f.readline())
                        devs = msg.get("devices") or []
                        if devs and all(d.get("activated") for d in devs):
                            return
                        time.sleep(0.05)
            except (OSError, ValueError):
                time.sleep(0.1)
            if self.proc.poll() is not None:
                raise RuntimeError("gpsfake exited (%s): %s" % (self.proc.returncode, self.errors()))
        raise TimeoutError("gpsd did not open the fake GPS within %s s: %s" % (timeout, self.errors()))

    def feed(self):
        """Release every sentence of the log (stepped mode)."""
        n = sum(1 for _ in open(self.log, "rb"))
        self.proc.stdin.write(b"\n" * (n + 10))
        self.proc.stdin.flush()

    def kill(self, sig=signal.SIGKILL):
        """Signal gpsfake and its gpsd (one process group) and reap gpsfake."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            self.proc.wait(10)

    def errors(self):
        try:
            return Path(self.workdir, "gpsfake.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def cleanup(self):
        self.kill()
        if self.errlog:
            self.errlog.close()
        # gpsd exports fixes in a SysV shared memory segment keyed by its port (gpsfake sets
        # GPSD_SHM_KEY=0x4770<port>) and, having dropped privileges, cannot remove it: we do.
        subprocess.run(["ipcrm", "-M", "0x4770%04X" % self.port], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=False)


@pytest.fixture
def gpsfake_factory(tmp_path):
    made = []

    def make(log, **kw):
        g = GpsFake(log, str(tmp_path / ("gpsfake%d" % len(made))), **kw)
        made.append(g)
        return g.start()
    yield make
    for g in made:
        g.cleanup()


@pytest.fixture
def reader_factory():
    made = []

    def make(port, **kw):
        kw.setdefault("reconnect_min_s", 0.05)
        kw.setdefault("reconnect_max_s", 0.3)
        r = GpsReader("127.0.0.1", port, **kw)
        made.append(r)
        return r
    yield make
    for r in made:
        r.stop()


# ---- gpsd's decoding in the .chk files ---------------------------------------------------

def chk_epochs(log):
    """The last TPV report of each reporting cycle in gpsd's .chk decoding, 2D/3D fixes only."""
    tpvs = [json.loads(line) for line in open(NMEA / (log + ".chk")) if line.startswith('{"class":"TPV"')]
    finals, cur = [], None
    for t in tpvs:
        if cur is not None and t.get("time") != cur.get("time"):
            finals.append(cur)
        cur = t
    if cur is not None:
        finals.append(cur)
    return [t for t in finals if t.get("mode", 0) >= 2]


def iso_ms(text):
    """Epoch ms of a .chk time (computed here independently of the code under test)."""
    t = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return round(t.timestamp() * 1000)


def assert_fix_matches(body, tpv, where):
    """Our wire fix against gpsd's TPV: same mode; position to 1e-7 degree; altitude MSL, speed and
    track to the wire's units (mm, mm/s, 0.01 degree); fields gpsd did not report are absent."""
    assert body["mode"] == tpv["mode"], where
    assert abs(body["lat_e7"] - tpv["lat"] * 1e7) <= 0.5 + 1e-6, where
    assert abs(body["lon_e7"] - tpv["lon"] * 1e7) <= 0.5 + 1e-6, where
    alt = tpv.get("altMSL", tpv.get("alt")) if tpv["mode"] == 3 else None
    if alt is None:
        assert "alt_mm" not in body, where
    else:
        assert abs(body["alt_mm"] - alt * 1000) <= 0.5 + 1e-6, where
    if tpv.get("speed") is None:
        assert "speed_mmps" not in body, where
    else:
        assert abs(body["speed_mmps"] - tpv["speed"] * 1000) <= 0.5 + 1e-6, where
    if tpv.get("track") is None:
        assert "track_cdeg" not in body, where
    else:
        assert abs(body["track_cdeg"] - tpv["track"] * 100) <= 0.5 + 1e-6, where


# ---- replay ------------------------------------------------------------------------------

@pytest.mark.parametrize("log", LOGS)
def test_gps_replay_matches_gpsd_decoding(log, gpsfake_factory, reader_factory):
    expected = chk_epochs(log)
    timed = [t for t in expected if t.get("time")]
    untimed = [t for t in expected if not t.get("time")]
    assert len(timed) >= 3, "the .chk of %s has too few fixes to test with" % log
    gf = gpsfake_factory(log)
    gf.wait_device()
    reader = reader_factory(gf.port)
    reader.start()
    assert reader.connected.wait(10), "reader did not connect: %s" % gf.errors()
    gf.feed()
    got = []

    def enough():
        got.extend(reader.take())
        return sum(1 for f in got if f.gps_ms is not None) >= len(timed) - 1

    # Every cycle but the last is handed out when the next one starts ...
    wait_for(enough, 45, "%d fixes from %s (%s)" % (len(timed) - 1, log, gf.errors()))
    # ... and the last one when the connection ends: once the reader has gpsd's report of the
    # log's final fix, gpsd is killed.
    final = timed[-1]

    def final_reported():
        tpv = reader.last_tpv
        return tpv is not None and tpv.get("time") is not None and _matches(fix_from_tpv(tpv) or {}, final) \
            and (iso_ms(tpv["time"]) - iso_ms(final["time"])) in (0, ROLLOVER_MS)
    wait_for(final_reported, 15, "gpsd's report of the last fix of %s" % log)
    gf.kill(signal.SIGKILL)
    wait_for(lambda: not reader.connected.is_set(), 10, "the reader to see gpsd gone")
    got.extend(reader.take())
    got_timed = [f for f in got if f.gps_ms is not None]
    assert len(got_timed) == len(timed), "%d fixes, gpsd's decoding has %d" % (len(got_timed), len(timed))
    shift = got_timed[0].gps_ms - iso_ms(timed[0]["time"])
    assert shift in (0, ROLLOVER_MS), "time off by %d ms" % shift
    for i, (fix, tpv) in enumerate(zip(got_timed, timed)):
        where = "%s fix %d (%s)" % (log, i, tpv["time"])
        assert fix.gps_ms - iso_ms(tpv["time"]) == shift, where
        assert_fix_matches(fix.body, tpv, where)
        # and it is a valid wire record
        payload = codec.encode_fixes("gps-test", 1, i, fix.gps_ms, "gps", [dict(fix.body, dt=0)])
        codec.decode(topics.topic("gps-test", "fix"), payload, now_ms=fix.gps_ms)
    for fix in got:
        if fix.gps_ms is None:   # a fix before the receiver sent a time (bu353s4 starts with one)
            assert any(_matches(fix.body, t) for t in untimed), "untimed fix %r is not in gpsd's decoding" % fix


def _matches(body, tpv):
    try:
        assert_fix_matches(body, tpv, "")
        return True
    except AssertionError:
        return False


# ---- gpsd going away ------------------------------------------------------------------------

def test_gps_reader_survives_gpsd_killed_and_restarted(gpsfake_factory, reader_factory, caplog):
    caplog.set_level(logging.DEBUG, logger="edge_agent.gps")
    log = "bu353s4.log"
    positions = {(round(t["lat"] * 1e7), round(t["lon"] * 1e7)) for t in chk_epochs(log)}
    gf = gpsfake_factory(log, once=False, cycle=0.005, stepped=False)   # loops the log
    gf.wait_device()
    reader = reader_factory(gf.port)
    reader.start()
    before = []
    wait_for(lambda: before.extend(reader.take()) or len(before) >= 3, 20, "fixes before the kill")

    gf.kill(signal.SIGKILL)                      # gpsd dies without a word
    wait_for(lambda: not reader.connected.is_set(), 10, "the reader to notice gpsd is gone")
    failures = reader.counters["gps_connect_failures"]
    wait_for(lambda: reader.counters["gps_connect_failures"] >= failures + 2, 10, "reconnect attempts")
    reader.take()

    gf2 = gpsfake_factory(log, port=gf.port, once=False, cycle=0.005, stepped=False)
    gf2.wait_device()
    wait_for(lambda: reader.counters["gps_connects"] == 2, 10, "the reader to reconnect")
    after = []
    wait_for(lambda: after.extend(reader.take()) or len(after) >= 3, 20, "fixes after the restart")
    for fix in before + after:
        assert (fix.body["lat_e7"], fix.body["lon_e7"]) in positions, fix
    lost = [r for r in caplog.records if "connection lost" in r.getMessage()]
    assert len(lost) == 1 and lost[0].levelno == logging.WARNING
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


def test_gps_reader_without_gpsd_retries_quietly(reader_factory, caplog):
    caplog.set_level(logging.DEBUG, logger="edge_agent.gps")
    reader = reader_factory(free_port())
    halt = threading.Event()
    reader.start(until=halt)          # as the agent starts it: ended when the agent stops
    wait_for(lambda: reader.counters["gps_connect_failures"] >= 4, 10, "repeated connection attempts")
    assert not reader.connected.is_set()
    assert reader.take() == []
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "not usable" in warnings[0].getMessage(), [r.getMessage() for r in warnings]
    halt.set()
    reader._thread.join(2)
    assert not reader._thread.is_alive()


def test_gps_reader_wrong_service_on_the_port(reader_factory, caplog):
    """A port where something else listens: one that never answers, then one that answers garbage."""
    caplog.set_level(logging.DEBUG, logger="edge_agent.gps")
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)                       # accepts (the kernel does), never says a word
        reader = reader_factory(silent.getsockname()[1], handshake_timeout_s=0.3)
        reader.start()
        wait_for(lambda: reader.counters["gps_connect_failures"] >= 2, 10, "handshake timeouts")
        assert not reader.connected.is_set()
        reader.stop()
        assert not reader._thread.is_alive()

    with socket.socket() as chatty:
        chatty.bind(("127.0.0.1", 0))
        chatty.listen(8)
        chatty.settimeout(0.2)
        reader = reader_factory(chatty.getsockname()[1], handshake_timeout_s=0.5)
        reader.start()
        answered = 0
        end = time.monotonic() + 10
        while answered < 2 and time.monotonic() < end:
            try:
                conn, _ = chatty.accept()
            except socket.timeout:
                continue
            with conn:
                conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            answered += 1
        wait_for(lambda: reader.counters["gps_connect_failures"] >= 2, 10, "rejected handshakes")
        assert not reader.connected.is_set() and reader.take() == []
    assert not [r for r in caplog.records if r.exc_info], "a traceback was logged"


# ---- conversion details (no gpsd needed) -------------------------------------------------------

def test_gps_fix_fields_from_odd_reports():
    base = {"class": "TPV", "mode": 3, "time": "2024-05-01T12:00:00.250Z", "lat": 52.52, "lon": 13.405}
    assert fix_from_tpv(dict(base, mode=1)) is None
    assert fix_from_tpv(dict(base, mode=0)) is None
    assert fix_from_tpv({k: v for k, v in base.items() if k != "lat"}) is None
    assert fix_from_tpv(dict(base, lat="52.5")) is None
    assert fix_from_tpv(dict(base, lat=95.0)) is None                     # outside the contract's range
    assert fix_from_tpv("not a report") is None
    assert fix_from_tpv(base) == {"mode": 3, "lat_e7": 525200000, "lon_e7": 134050000}
    # altitude: altMSL first, then altHAE - geoidSep, then the deprecated alt (gpsd < 3.20)
    assert fix_from_tpv(dict(base, altMSL=34.5, altHAE=80.0, alt=1.0))["alt_mm"] == 34500
    assert fix_from_tpv(dict(base, altHAE=80.0, geoidSep=45.5, alt=1.0))["alt_mm"] == 34500
    assert fix_from_tpv(dict(base, alt=34.5))["alt_mm"] == 34500
    assert "alt_mm" not in fix_from_tpv(dict(base, altHAE=80.0))          # ellipsoid height is not MSL
    assert "alt_mm" not in fix_from_tpv(dict(base, mode=2, altMSL=34.5))
    assert fix_from_tpv(dict(base, track=359.999))["track_cdeg"] == 0
    assert fix_from_tpv(dict(base, speed=1.2344, track=271.5, eph=2.5, epv=4.1), sats=9) == {
        "mode": 3, "lat_e7": 525200000, "lon_e7": 134050000, "speed_mmps": 1234, "track_cdeg": 27150,
        "eph_mm": 2500, "epv_mm": 4100, "sats": 9}
    assert "speed_mmps" not in fix_from_tpv(dict(base, speed=True))
    assert "speed_mmps" not in fix_from_tpv(dict(base, speed=-1.0))
    assert tpv_time_ms(base["time"]) == iso_ms(base["time"])
    assert tpv_time_ms("2024-05-01T12:00:00Z") == iso_ms("2024-05-01T12:00:00Z")
    assert tpv_time_ms("yesterday") is None and tpv_time_ms(None) is None


def test_gps_epoch_is_handed_out_once_when_complete():
    tr = EpochTracker()
    a1 = {"mode": 2, "time": "2024-05-01T12:00:00.000Z", "lat": 1.0, "lon": 2.0}
    a2 = dict(a1, mode=3, altMSL=10.0)
    b1 = dict(a1, time="2024-05-01T12:00:01.000Z")
    assert tr.feed(a1, 1.0) is None and tr.feed(a2, 1.1) is None
    fix = tr.feed(b1, 2.0)
    assert fix.body["alt_mm"] == 10000 and fix.mono == 1.1         # the cycle's last, most complete report
    assert tr.flush().gps_ms == tpv_time_ms(b1["time"])
    assert tr.feed(b1, 3.0) is None and tr.flush() is None         # the same cycle again (after a reconnect)


def test_gps_time_is_the_receivers_when_plausible():
    now = 1_750_000_000_000
    assert choose_time(now + 300, now, "ntp") == (now + 300, "gps")
    assert choose_time(now + ROLLOVER_MS, now, "ntp") == (now, "ntp")     # a week-rollover bug: years off
    assert choose_time(now - 2 * 86400000, now, "rtc") == (now, "rtc")
    assert choose_time(now + ROLLOVER_MS, 12_000, "none") == (now + ROLLOVER_MS, "gps")  # our clock is unset
    assert choose_time(codec.MIN_TS_MS - 1, 12_000, "none") == (12_000, "none")
    assert choose_time(None, now, "ntp") == (now, "ntp")


def test_gps_config_errors_name_the_key():
    from edge_agent import config as agent_config
    from fieldwatch import config as cfg
    with pytest.raises(cfg.ConfigError, match=r"^gps\.port must be a TCP port number 1\.\.65535, got '70000' "
                                              r"\(from environment variable EDGE_AGENT_GPS_PORT\)"):
        agent_config.load(environ={"EDGE_AGENT_DEVICE_ID": "x", "EDGE_AGENT_GPS_PORT": "70000"})
    with pytest.raises(cfg.ConfigError, match=r"^gps\.interval_s must be at least 0\.1"):
        agent_config.load(environ={"EDGE_AGENT_DEVICE_ID": "x", "EDGE_AGENT_GPS_INTERVAL_S": "0"})
    with pytest.raises(cfg.ConfigError, match=r"^gps\.enabled must be true or false"):
        agent_config.load(environ={"EDGE_AGENT_DEVICE_ID": "x", "EDGE_AGENT_GPS_ENABLED": "maybe"})
    conf = agent_config.load(environ={"EDGE_AGENT_DEVICE_ID": "x", "EDGE_AGENT_GPS_ENABLED": "false"})
    from edge_agent.gps import from_config
    assert from_config(conf) is None


# ---- the agent process ---------------------------------------------------------------------

AGENT_ENV = {
    "EDGE_AGENT_GPS_INTERVAL_S": "0.3",
    "EDGE_AGENT_GPS_RECONNECT_MAX_S": "0.5",
    "EDGE_AGENT_STATUS_INTERVAL_S": "1",
    "EDGE_AGENT_WAVE_EVERY_S": "0",
    "EDGE_AGENT_MQTT_RECONNECT_MIN_S": "0.1",
    "EDGE_AGENT_MQTT_RECONNECT_MAX_S": "0.5",
    "EDGE_AGENT_OUTBOX_EXIT_DRAIN_S": "0",
}


class AgentRun:
    """`edge-agent run --hardware sim` as a child process, its output in a file."""

    def __init__(self, tmp_path, dev, mqtt_url, gps_port, extra_env=None):
        self.dev = dev
        self.out = tmp_path / ("%s.log" % dev)
        env = dict(os.environ, MQTT_URL=mqtt_url, EDGE_AGENT_GPS_PORT=str(gps_port), **AGENT_ENV)
        env.update(extra_env or {})
        with open(self.out, "wb") as f:
            self.proc = subprocess.Popen([sys.executable, "-m", "edge_agent.cli", "run", "--device-id", dev,
                                          "--hardware", "sim", "--state-dir", str(tmp_path / dev)],
                                         env=env, stdout=f, stderr=subprocess.STDOUT)

    def output(self):
        return self.out.read_text(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


@pytest.fixture
def agent_run(tmp_path, fresh_broker):
    made = []

    def make(dev, gps_port, extra_env=None):
        listener = DeviceListener(fresh_broker.url, dev)
        agent = AgentRun(tmp_path, dev, fresh_broker.url, gps_port, extra_env)
        made.append((agent, listener))
        return agent, listener
    yield make
    for agent, listener in made:
        agent.stop()
        listener.close()


def test_agent_publishes_gpsd_fixes_as_fix_records(gpsfake_factory, agent_run):
    log = "gr8013-w.log"
    expected = chk_epochs(log)
    gf = gpsfake_factory(log, once=False, cycle=0.01, stepped=False)
    gf.wait_device()
    agent, listener = agent_run("gps-agent", gf.port)
    wait_for(lambda: len(listener.of_kind("fix")) >= 3, 30, "fix messages (%s)" % agent.output()[-2000:])
    now = int(time.time() * 1000)
    records = []
    for payload in listener.of_kind("fix"):
        msg = codec.decode(topics.topic("gps-agent", "fix"), payload, now_ms=now)
        records += msg["records"]
        # gpsd 3.22 puts this 2015 log in 2035: not plausible, so stamped with our clock
        assert msg["tq"] != "gps"
    for rec in records:
        body = {k: v for k, v in rec.items() if v is not None and k not in ("seq", "ts")}
        assert any(_matches(body, t) for t in expected), rec
        assert abs(rec["ts"] - now) < 60000
    assert agent.output().count("fixes are stamped with our clock") == 1
    assert agent.stop() == 0
    assert "Traceback" not in agent.output()


def test_agent_fixes_reach_the_database_once(gpsfake_factory, agent_run, fresh_broker, fresh_db):
    log = "hab-gpspi.log"
    expected = chk_epochs(log)
    gf = gpsfake_factory(log, once=False, cycle=0.01, stepped=False)
    gf.wait_device()
    collector = CollectorProcess(fresh_broker.url, fresh_db, client_id="collector-gps").start()
    try:
        agent, listener = agent_run("gps-db", gf.port, {"EDGE_AGENT_OUTBOX_EXIT_DRAIN_S": "15"})

        def rows():
            with psycopg.connect(fresh_db) as conn:
                return conn.execute("SELECT boot, seq, mode, lat, lon, alt_m, speed_mps, track_deg, eph_m, epv_m "
                                    "FROM fixes WHERE device_id = 'gps-db' ORDER BY boot, seq").fetchall()
        wait_for(lambda: len(rows()) >= 4, 30, "fixes in the database (%s)" % agent.output()[-2000:])
        assert agent.stop() == 0                  # SIGTERM: stops measuring, drains, waits for confirmations
        stored = rows()
        health = json.loads(listener.of_kind("status")[-1])["health"]
        assert len(stored) == health["gps_fixes"], "every fix the agent made is in the database, once"
        assert len({(b, s) for b, s, *_ in stored}) == len(stored)
        for boot, seq, mode, lat, lon, alt, speed, track, eph, epv in stored:
            body = {"mode": mode, "lat_e7": round(lat * 1e7), "lon_e7": round(lon * 1e7)}
            body.update((k, round(v * f)) for k, v, f in (("alt_mm", alt, 1000), ("speed_mmps", speed, 1000),
                                                          ("track_cdeg", track, 100)) if v is not None)
            assert any(_matches(body, t) for t in expected), (seq, body)
            assert eph is not None and (mode == 2 or epv is not None)
    finally:
        collector.terminate()


def test_agent_runs_without_gpsd(agent_run):
    agent, listener = agent_run("gps-none", free_port())
    wait_for(lambda: len(listener.of_kind("features")) >= 2, 30, "feature windows (%s)" % agent.output()[-2000:])

    def retried():
        for payload in listener.of_kind("status"):
            health = json.loads(payload).get("health") or {}
            if health.get("gps_connect_failures", 0) >= 3 and health.get("gps_connects") == 0:
                return True
        return False
    wait_for(retried, 20, "status health showing gpsd connection retries")
    out = agent.output()
    assert out.count("gpsd at 127.0.0.1") == 1, out[-3000:]       # logged once, retried quietly
    assert not listener.of_kind("fix")
    assert agent.proc.poll() is None
    assert agent.stop() == 0
    assert "Traceback" not in agent.output()
