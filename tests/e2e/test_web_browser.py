"""The status page in a real headless Chromium (Debian's chromium + chromedriver, driven by Selenium).

The fleet: tests/e2e/web_fleet.py's devices plus one real `edge-agent run --hardware sim`
process, all through a real Mosquitto into a real PostgreSQL by the real collector.
A screenshot of each page goes to artifacts/ (gitignored).
"""

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from fieldwatch.devservices.broker import Broker
from fieldwatch.devservices.collector import CollectorProcess
from fieldwatch.devservices.ports import free_port
from fieldwatch.wire import codec
from tests.e2e.web_fleet import MARKUP_DEVICE, MARKUP_FW, MARKUP_LOG, get, start_fleet

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts"
CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"
AGENT = "pi-01"
# The site's collector marks a status older than this, s, as stale (web.status_stale_s): short, so
# the fleet's status messages, sent once at the start, are stale while the agent's (every 2 s) are not.
STATUS_STALE_S = 8

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e '.[dev]')")
if not (os.access(CHROMEDRIVER, os.X_OK) and os.access(CHROMIUM, os.X_OK)):
    pytest.skip("Debian's chromium and chromium-driver are not installed (scripts/setup.sh installs them)",
                allow_module_level=True)
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def _start_agent(mqtt_url, state_dir):
    env = dict(os.environ, MQTT_URL=mqtt_url, EDGE_AGENT_STATUS_INTERVAL_S="2")
    return subprocess.Popen([str(Path(sys.executable).parent / "edge-agent"), "run", "--device-id", AGENT,
                             "--hardware", "sim", "--state-dir", str(state_dir)], env=env,
                            stdout=open(state_dir / "agent.log", "wb"), stderr=subprocess.STDOUT)


@pytest.fixture(scope="module")
def site(pg_cluster):
    """(fleet, agent process) with the agent online and its feature windows stored."""
    broker = Broker()
    broker.start()
    db = pg_cluster.create_database()
    state = Path(tempfile.mkdtemp(prefix="web-agent-"))
    fleet = agent = None
    try:
        fleet = start_fleet(broker, db, extra_env={"COLLECTOR_WEB_STATUS_STALE_S": str(STATUS_STALE_S)})
        agent = _start_agent(broker.url, state)
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            status, body = get(fleet.url + "/api/v1/devices/" + AGENT)
            if status == 200 and body["device"]["online"] and body["device"]["windows_1m"] > 0:
                break
            assert agent.poll() is None, (state / "agent.log").read_text()[-3000:]
            time.sleep(0.3)
        else:
            raise AssertionError("the simulated agent never came online with data: %s"
                                 % (state / "agent.log").read_text()[-3000:])
        yield fleet, agent
    finally:
        if agent is not None and agent.poll() is None:
            agent.kill()
            agent.wait(10)
        if fleet is not None:
            fleet.stop()
        broker.cleanup()
        pg_cluster.drop_database(db)
        shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    opts = Options()
    opts.binary_location = CHROMIUM
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,1800",
              "--no-first-run", "--disable-extensions"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    # Chromium keeps its profile and singleton socket under TMPDIR: give it one of its own, removed after.
    tmp = tempfile.mkdtemp(prefix="fw-chromium-")
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER, env=dict(os.environ, TMPDIR=tmp)), options=opts)
    drv.set_page_load_timeout(20)
    try:
        yield drv
    finally:
        drv.quit()
        shutil.rmtree(tmp, ignore_errors=True)


def _screenshot(drv, name):
    ARTIFACTS.mkdir(exist_ok=True)
    drv.save_screenshot(str(ARTIFACTS / name))


def _js_errors(drv):
    return [e["message"] for e in drv.get_log("browser") if e["level"] == "SEVERE"]


def _live(drv):
    """True once the page's last refresh from the API succeeded (the header says so)."""
    return "ok" in drv.find_element(By.ID, "conn").get_attribute("class").split()


def _rows(drv):
    """{device: state} of the overview's rows, read in one go (the page replaces rows while we look)."""
    return dict(drv.execute_script(
        "return Array.from(document.querySelectorAll('#devices-body tr.device'))"
        ".map(tr => [tr.dataset.device, tr.dataset.state === undefined ? null : tr.dataset.state])"))


def test_web_overview_lists_the_fleet_live(site, browser):
    fleet, _ = site
    browser.get(fleet.url + "/")
    # the server renders the rows once; the script replaces them with live ones carrying data-state
    WebDriverWait(browser, 15).until(lambda d: len(_rows(d)) == 3 and None not in _rows(d).values())
    assert _rows(browser) == {"pump-01": "online", "pump-02": "online", AGENT: "online"}
    WebDriverWait(browser, 10).until(_live)
    assert "3 devices, 3 online" in browser.find_element(By.ID, "summary").text
    assert browser.find_element(By.ID, "counts-head").text, "the stored-rows table is filled"
    text = browser.execute_script("return document.getElementById('devices').innerText")
    for dev, (_, _, fw) in fleet.status.items():
        assert fw in text
    assert "3 missing" in text, "pump-01's delivery gap shows"
    assert MARKUP_FW in text and not browser.find_elements(By.ID, "fwx"), "a firmware string is shown as text"
    assert not browser.find_elements(By.CSS_SELECTOR, "meta[http-equiv=refresh]"), "no full-page refresh"
    _screenshot(browser, "web-overview.png")
    assert _js_errors(browser) == []


def test_web_device_page_draws_its_charts_and_shows_markup_as_text(site, browser):
    fleet, _ = site
    browser.get(fleet.url + "/devices/pump-01")
    wait = WebDriverWait(browser, 15)
    for chart in ("rms-chart", "spectrum-chart", "track-chart"):
        canvas = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#%s canvas" % chart))
        size = canvas.size
        assert size["width"] > 100 and size["height"] > 100, (chart, size)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#logs tr.log")) == len(fleet.logs["pump-01"]))
    cells = browser.execute_script(  # read in one go: the page replaces the rows every few seconds
        "return Array.from(document.querySelectorAll('#logs tr.log td')).map(td => td.textContent)")
    assert MARKUP_LOG in cells, "the log line's markup is shown as text"
    assert browser.execute_script("return window.__xss === undefined"), "markup from a device ran"
    assert not browser.find_elements(By.CSS_SELECTOR, "#logs script, #logs img")
    assert "27–29" in browser.find_element(By.ID, "gaps").text
    WebDriverWait(browser, 10).until(_live)
    _screenshot(browser, "web-device.png")
    # the simulated agent's own page: its RMS trend from the per-minute aggregate
    browser.get(fleet.url + "/devices/" + AGENT)
    canvas = WebDriverWait(browser, 15).until(lambda d: d.find_element(By.CSS_SELECTOR, "#rms-chart canvas"))
    assert canvas.size["width"] > 100 and canvas.size["height"] > 100
    WebDriverWait(browser, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#spectrum-chart canvas"))
    _screenshot(browser, "web-device-agent.png")
    assert _js_errors(browser) == []


def test_web_quarantine_page_shows_markup_in_a_topic_as_text(site, browser):
    fleet, _ = site
    browser.get(fleet.url + "/quarantine")
    WebDriverWait(browser, 15).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "tr.qrow")) == len(fleet.quarantined))
    text = browser.execute_script("return document.getElementById('quarantine').innerText")
    assert MARKUP_DEVICE in text and "bad_device_id" in text and "bad_json" in text
    assert not browser.find_elements(By.CSS_SELECTOR, "#quarantine script")
    WebDriverWait(browser, 10).until(_live)
    assert _js_errors(browser) == []
    _screenshot(browser, "web-quarantine.png")


def _stale(drv):
    """{device: its "status stale" marker or None} of the overview's rows."""
    return dict(drv.execute_script(
        "return Array.from(document.querySelectorAll('#devices-body tr.device'))"
        ".map(tr => [tr.dataset.device, tr.querySelector('.stale') ? tr.querySelector('.stale').textContent : null])"))


def test_web_device_sending_data_with_an_old_status_says_its_status_is_stale(site, browser):
    fleet, _ = site
    # pump-02 sends a reading now; its only status came at the start, longer than STATUS_STALE_S ago
    deadline = time.monotonic() + 30
    while (time.time() * 1000 - fleet.now_ms) / 1000 <= STATUS_STALE_S + 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    now = int(time.time() * 1000)
    boot, nxt, _ = fleet.status["pump-02"]
    fleet.publisher.send("pump-02", "readings", boot, nxt, nxt, codec.encode_readings(
        "pump-02", boot, nxt, now, "ntp", [[0, "vbat_v", 3.6]]))
    assert fleet.publisher.wait_confirmed(20)
    try:
        browser.get(fleet.url + "/")
        WebDriverWait(browser, 15).until(lambda d: (_stale(d).get("pump-02") or "").startswith("status stale (last "))
        marks = _stale(browser)
        assert marks["pump-02"].endswith(" ago)"), marks
        assert marks[AGENT] is None, "the agent's status (every 2 s) is fresh: %r" % marks
        assert _rows(browser)["pump-02"] == "online", "the marker is next to the state, not instead of it"
        browser.get(fleet.url + "/devices/pump-02")
        mark = WebDriverWait(browser, 15).until(lambda d: d.find_element(By.ID, "status-stale"))
        WebDriverWait(browser, 10).until(lambda d: mark.is_displayed() and mark.text.startswith("status stale (last "))
        browser.get(fleet.url + "/devices/" + AGENT)
        WebDriverWait(browser, 15).until(_live)
        assert not browser.find_element(By.ID, "status-stale").is_displayed()
        assert _js_errors(browser) == []
    finally:
        _screenshot(browser, "web-status-stale.png")


def test_web_unknown_device_gets_a_404_page(site, browser):
    fleet, _ = site
    status, _ = get(fleet.url + "/devices/no-such-pump")
    assert status == 404
    try:
        browser.get(fleet.url + "/devices/no-such-pump")
        assert browser.find_element(By.TAG_NAME, "h1").text == "Not found"
        assert "no-such-pump has not reported" in browser.find_element(By.TAG_NAME, "main").text
        assert not browser.find_elements(By.ID, "rms-chart"), "no empty device sections"
    finally:
        _screenshot(browser, "web-notfound.png")


def test_web_fleet_table_scrolls_in_its_container_at_phone_width(site, browser):
    fleet, _ = site
    browser.set_window_size(412, 900)
    try:
        browser.get(fleet.url + "/")
        WebDriverWait(browser, 15).until(lambda d: len(_rows(d)) == 3 and None not in _rows(d).values())
        width = browser.execute_script("return document.documentElement.clientWidth")
        assert width <= 412
        wider = browser.execute_script(
            "const w = document.documentElement.clientWidth;"
            "return Array.from(document.querySelectorAll('body *')).filter(e => e.closest('.scroll') === null"
            " || e.classList.contains('scroll')).filter(e => e.getBoundingClientRect().right > w + 0.5)"
            ".map(e => e.tagName + '#' + e.id + '.' + e.className)")
        assert wider == [], "wider than the %d px viewport: %r" % (width, wider)
        assert browser.execute_script("return document.documentElement.scrollWidth") <= width, "the page scrolls sideways"
        box = browser.find_element(By.ID, "devices-scroll")
        assert browser.execute_script("return arguments[0].scrollWidth > arguments[0].clientWidth", box)
        assert browser.execute_script("arguments[0].scrollLeft = 1e6; return arguments[0].scrollLeft > 0", box), \
            "the fleet table's container does not scroll"
    finally:
        _screenshot(browser, "web-phone.png")
        browser.set_window_size(1280, 1800)


def test_web_header_turns_red_and_names_the_broker_when_it_is_down(site, browser):
    fleet, _ = site
    port = free_port()
    other = Broker()          # a second collector on the same database, with a broker of its own to lose
    other.start()
    c = CollectorProcess(other.url, fleet.db, client_id="web-down-%d" % port, web_listen="127.0.0.1:%d" % port).start()
    try:
        browser.get("http://127.0.0.1:%d/" % port)
        WebDriverWait(browser, 15).until(_live)
        conn = browser.find_element(By.ID, "conn")
        assert "broker" not in conn.text
        other.stop()
        WebDriverWait(browser, 20).until(lambda d: "bad" in conn.get_attribute("class").split())
        assert "broker not connected" in conn.text, conn.text
        assert conn.value_of_css_property("background-color") != "rgba(0, 0, 0, 0)", "shown in its colour"
        assert "broker NOT connected" in browser.find_element(By.ID, "summary").text
    finally:
        _screenshot(browser, "web-broker-down.png")
        c.terminate()
        other.cleanup()


def test_web_device_that_goes_offline_turns_offline_without_a_reload(site, browser):
    fleet, agent = site
    browser.get(fleet.url + "/")
    WebDriverWait(browser, 15).until(lambda d: _rows(d).get(AGENT) == "online")
    browser.execute_script("window.__sameLoad = 'yes'")
    agent.send_signal(signal.SIGKILL)          # no clean disconnect: the broker publishes the agent's last will
    agent.wait(10)
    WebDriverWait(browser, 20).until(lambda d: _rows(d).get(AGENT) == "offline")
    assert browser.execute_script("return window.__sameLoad") == "yes", "the page was reloaded"
    assert _rows(browser)["pump-01"] == "online"
    assert _live(browser)
    _screenshot(browser, "web-offline.png")


def test_web_page_asks_for_the_read_token_when_reads_are_protected(site, browser):
    fleet, _ = site
    port = free_port()
    other = Broker()          # a second collector on the same database, with web.read_token set
    other.start()
    c = CollectorProcess(other.url, fleet.db, client_id="web-read-%d" % port, web_listen="127.0.0.1:%d" % port,
                         extra_env={"COLLECTOR_WEB_READ_TOKEN": "sesame"}).start()
    try:
        browser.get("http://127.0.0.1:%d/" % port)
        form = WebDriverWait(browser, 15).until(lambda d: d.find_element(By.ID, "token-form"))
        WebDriverWait(browser, 15).until(lambda d: form.is_displayed())
        assert not _rows(browser), "no device data without the token"
        assert "401" not in browser.find_element(By.ID, "conn").text
        assert "needs a token" in browser.find_element(By.ID, "conn").text
        browser.find_element(By.ID, "token-input").send_keys("sesame")
        form.submit()
        WebDriverWait(browser, 15).until(lambda d: len(_rows(d)) == 3 and None not in _rows(d).values())
        WebDriverWait(browser, 10).until(_live)
        assert not form.is_displayed()
    finally:
        browser.execute_script("window.localStorage.clear()")
        c.terminate()
        other.cleanup()
