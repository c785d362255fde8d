"""Status LED and event button (edge_agent/indicator.py) on gpiozero's MockFactory.

The LED's pin history shows each pattern (steady, slow blink, fast blink); in the
real agent (simulated ADXL345, a private broker) the LED follows the broker
connection and a button press becomes a `button_press` reading in the outbox and
on the wire, plus a waveform capture.
"""

import logging
import os
import statistics
import threading
import time

import pytest
from gpiozero.pins.mock import MockFactory

from edge_agent import config as agent_config
from edge_agent import indicator as indicator_mod
from edge_agent.agent import Agent
from edge_agent.accel import Accelerometer
from edge_agent.indicator import Indicator, PATTERNS
from edge_agent.keys import KeySource
from edge_agent.outbox import Outbox, read_records
from edge_agent.uplink import Uplink
from fieldwatch import config as cfg
from tests.harness.listener import DeviceListener
from tests.harness.waiting import wait_for


@pytest.fixture
def fresh_indicator():
    ind = Indicator("GPIO17", "GPIO27", MockFactory())
    yield ind
    ind.close()


def toggles(pin):
    """[(seconds since the previous change, new state)] of a mock pin, after its first entry."""
    return [(s.timestamp, s.state) for s in pin.states[1:]]


def assert_blinks(pin, on_s, off_s, cycles):
    """The pin alternates on/off with (median) on and off times near the pattern's.

    Within 40 %: the patterns differ tenfold, and the blink thread shares two busy cores.
    """
    wait_for(lambda: len(toggles(pin)) >= 2 * cycles + 1, (on_s + off_s) * cycles * 3 + 2, "%d blinks" % cycles)
    changes = toggles(pin)
    states = [s for _, s in changes]
    assert all(a != b for a, b in zip(states, states[1:])), "pin did not alternate: %s" % states
    # the first change is the pattern starting; each later one ends an on or an off phase
    ons = [dt for (dt, s), (_, prev) in zip(changes[1:], changes) if prev and not s]
    offs = [dt for (dt, s), (_, prev) in zip(changes[1:], changes) if not prev and s]
    assert ons and offs
    assert abs(statistics.median(ons) - on_s) <= 0.4 * on_s, "on phases %s, expected %s s" % (ons, on_s)
    assert abs(statistics.median(offs) - off_s) <= 0.4 * off_s, "off phases %s, expected %s s" % (offs, off_s)


def test_indicator_online_is_steady_on(fresh_indicator):
    pin = fresh_indicator.led.pin
    fresh_indicator.show("online")
    assert pin.state
    pin.clear_states()
    time.sleep(0.5)
    assert pin.state and toggles(pin) == []


def test_indicator_offline_blinks_slowly(fresh_indicator):
    pin = fresh_indicator.led.pin
    pin.clear_states()
    fresh_indicator.show("offline")
    assert_blinks(pin, *PATTERNS["offline"], cycles=1)


def test_indicator_error_blinks_fast_then_online_is_steady(fresh_indicator):
    pin = fresh_indicator.led.pin
    pin.clear_states()
    fresh_indicator.show("error")
    assert_blinks(pin, *PATTERNS["error"], cycles=4)
    fresh_indicator.show("error")           # the same state again: the blink goes on undisturbed
    n = len(pin.states)
    wait_for(lambda: len(pin.states) > n, 1, "the blink to go on")
    fresh_indicator.show("online")
    assert pin.state
    pin.clear_states()
    time.sleep(0.4)
    assert pin.state and toggles(pin) == []
    with pytest.raises(ValueError, match="unknown indicator state 'blue'; one of online, offline, error"):
        fresh_indicator.show("blue")


def test_indicator_button_presses_are_queued_once_each(fresh_indicator):
    pin = fresh_indicator.button.pin
    for _ in range(3):
        pin.drive_low()                     # pressed (to ground, pull-up)
        time.sleep(0.08)                    # longer than the debounce
        pin.drive_high()
        time.sleep(0.08)
    presses = fresh_indicator.presses()
    assert len(presses) == 3 and presses == sorted(presses)
    assert fresh_indicator.presses() == []


def test_indicator_unusable_gpio_leaves_it_out(monkeypatch, caplog):
    monkeypatch.setenv("GPIOZERO_PIN_FACTORY", "no-such-factory")
    conf = agent_config.load(environ={"EDGE_AGENT_DEVICE_ID": "x", "EDGE_AGENT_SENSOR_HARDWARE": "real"})
    with caplog.at_level(logging.WARNING, logger="edge_agent.indicator"):
        assert indicator_mod.from_config(conf) is None
    assert "GPIO GPIO17 / GPIO27 unusable" in caplog.text and "GPIOZERO_PIN_FACTORY" in caplog.text


def test_indicator_config_errors_name_the_key():
    with pytest.raises(cfg.ConfigError, match=r"^indicator\.led_pin 'GP 17' is not a pin name"):
        agent_config.load(environ={"EDGE_AGENT_DEVICE_ID": "x", "EDGE_AGENT_INDICATOR_LED_PIN": "GP 17"})
    with pytest.raises(cfg.ConfigError, match=r"^indicator\.button_pin BCM pin 60 does not exist"):
        agent_config.load(environ={"EDGE_AGENT_DEVICE_ID": "x", "EDGE_AGENT_INDICATOR_BUTTON_PIN": "60"})
    conf = agent_config.load(environ={"EDGE_AGENT_DEVICE_ID": "x", "EDGE_AGENT_INDICATOR_LED_PIN": "",
                                      "EDGE_AGENT_INDICATOR_BUTTON_PIN": "22"})
    assert conf["indicator"]["led_pin"] == "" and conf["indicator"]["button_pin"] == 22


# ---- in the agent ---------------------------------------------------------------------------

def open_accelerometer(conf):
    """The simulated ADXL345 opened as the configuration says (what edge-agent run does)."""
    s = conf["sensor"]
    acc = Accelerometer.create(hardware=s["hardware"], source=s["sim_source"])
    acc.open(s["rate_hz"], s["range_g"], s["watermark"])
    return acc


class RunningAgent:
    """The real Agent (simulated chip, SQLite outbox, paho uplink) in a thread, as cli.run builds it."""

    def __init__(self, tmp_path, mqtt_url, dev):
        env = {"EDGE_AGENT_DEVICE_ID": dev, "MQTT_URL": mqtt_url, "EDGE_AGENT_SENSOR_HARDWARE": "sim",
               "EDGE_AGENT_OUTBOX_STATE_DIR": str(tmp_path / dev), "EDGE_AGENT_GPS_ENABLED": "false",
               "EDGE_AGENT_WAVE_EVERY_S": "0", "EDGE_AGENT_WAVE_SAMPLES": "64", "EDGE_AGENT_STATUS_INTERVAL_S": "1",
               "EDGE_AGENT_MQTT_RECONNECT_MIN_S": "0.1", "EDGE_AGENT_MQTT_RECONNECT_MAX_S": "0.3",
               "EDGE_AGENT_OUTBOX_EXIT_DRAIN_S": "0"}
        self.conf = conf = agent_config.load(environ=env)
        state_dir = conf["outbox"]["state_dir"]
        os.makedirs(state_dir)
        self.db_path = os.path.join(state_dir, "outbox.db")
        self.dev = dev
        self.agent = None
        self._built = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self._built.wait(15), "the agent was not built"

    def _run(self):
        # The outbox (SQLite) belongs to the thread that runs the agent, as in edge-agent run.
        conf, dev = self.conf, self.dev
        keys = KeySource(conf["outbox"]["state_dir"], floor=Outbox.max_boot_in(self.db_path))
        outbox = Outbox(self.db_path, keys, conf["device"]["id"], max_records=conf["outbox"]["max_records"],
                        resend_after_s=conf["outbox"]["resend_after_s"])
        m = conf["mqtt"]

        def make_uplink(status_payload, on_ack, on_command):
            return Uplink(m["url"], dev, status_payload, on_ack, on_command, client_id=dev,
                          keepalive_s=m["keepalive_s"], session_expiry_s=m["session_expiry_s"],
                          reconnect_min_s=m["reconnect_min_s"], reconnect_max_s=m["reconnect_max_s"],
                          max_unacked=m["max_unacked"])
        try:
            self.agent = Agent(conf, open_accelerometer(conf), outbox, keys, make_uplink, reset_reason="power_on")
        finally:
            self._built.set()
        try:
            self.agent.run()
        finally:
            outbox.close()

    def stored(self, kind):
        """Bodies of the records of one kind in the outbox (read through a connection of our own)."""
        return [r[4] for r in read_records(self.db_path, kind)]

    def stop(self):
        self.agent.stop()
        self.thread.join(30)
        if self.agent.indicator is not None:
            self.agent.indicator.close()


@pytest.fixture
def running_agent(tmp_path, fresh_broker):
    made = []

    def make(dev):
        listener = DeviceListener(fresh_broker.url, dev)
        ra = RunningAgent(tmp_path, fresh_broker.url, dev)
        made.append((ra, listener))
        return ra, listener
    yield make
    for ra, listener in made:
        ra.stop()
        listener.close()


def test_agent_button_press_stores_a_tagged_reading_and_a_capture(running_agent):
    ra, listener = running_agent("ind-press")
    ind = ra.agent.indicator
    assert ind is not None and isinstance(ind.led.pin.factory, MockFactory)
    wait_for(lambda: ind.state == "online", 10, "the LED to show online")
    for _ in range(2):
        ind.button.pin.drive_low()
        time.sleep(0.08)
        ind.button.pin.drive_high()
        time.sleep(0.3)
    wait_for(lambda: sum(len(m["records"]) for m in listener.decoded("readings")) >= 2, 10, "readings on the wire")
    presses = [r for m in listener.decoded("readings") for r in m["records"] if r["name"] == "button_press"]
    assert [r["value"] for r in presses] == [1, 2]
    stored = ra.stored("readings")
    assert [r for r in stored if r[0] == "button_press"] == [["button_press", 1], ["button_press", 2]]
    wait_for(lambda: listener.decoded("wave"), 10, "the waveform capture a press starts")
    assert listener.decoded("wave")[0]["n"] == 64


def test_agent_led_follows_the_broker_connection(running_agent, fresh_broker):
    ra, listener = running_agent("ind-led")
    ind = ra.agent.indicator
    wait_for(lambda: ind.state == "online", 10, "online")
    assert ind.led.pin.state
    fresh_broker.stop()
    wait_for(lambda: ind.state == "offline", 10,
             lambda: "offline (buffering); state %s, counters %s" % (ind.state, ra.agent.counters))
    pin = ind.led.pin
    pin.clear_states()
    assert_blinks(pin, *PATTERNS["offline"], cycles=1)
    fresh_broker.start()
    wait_for(lambda: ind.state == "online", 15, lambda: "online again; state %s" % ind.state)
    assert ind.led.pin.state
    pin = ind.led.pin
    ra.agent.stop()              # the agent stops by itself: its LED goes off, the pins are released
    ra.thread.join(30)
    assert not ra.thread.is_alive()
    assert not pin.state and ind.led.closed


def test_agent_led_shows_errors_fast(running_agent):
    ra, listener = running_agent("ind-error")
    ind = ra.agent.indicator
    wait_for(lambda: ind.state == "online", 10, "online")
    before = ra.agent.accel.i2c_errors
    ra.agent.accel.bus.fail_next(3)          # the simulated bus NACKs the next three transfers
    wait_for(lambda: ra.agent.accel.i2c_errors > before, 5, "the I2C errors to be counted")
    wait_for(lambda: ind.state == "error", 5, "the LED to show the error")
    pin = ind.led.pin
    pin.clear_states()
    assert_blinks(pin, *PATTERNS["error"], cycles=3)
