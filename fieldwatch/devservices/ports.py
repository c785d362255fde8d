"""TCP port helpers for the dev services.

The services started here (Mosquitto, PostgreSQL) each get a port picked
here, never the system defaults 1883 / 5432, so tests, the demo and the
benchmarks cannot talk to (or disturb) a broker or database that happens to
run on the machine.
"""

import socket
import time

LOCALHOST = "127.0.0.1"

# Ports never handed out: the system Mosquitto and PostgreSQL.
RESERVED = frozenset({1883, 8883, 5432})


def free_port(host=LOCALHOST):
    """Return a TCP port on `host` that nothing listens on right now.

    The kernel picks it from the ephemeral range by binding port 0. There is a
    small window in which another process could take it before the caller's
    server binds it; the services report such a bind failure clearly in their
    log, which they include in their error.
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in RESERVED:
            return port
    raise RuntimeError("could not find a free TCP port on %s" % host)


def port_is_open(host, port, timeout=0.5):
    """True if a TCP connection to host:port is accepted within `timeout` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_for_port(host, port, timeout=10.0, alive=None):
    """Wait until host:port accepts TCP connections.

    `alive`, if given, is a callable returning False once the server process has
    died: waiting then stops at once instead of running into the timeout.
    Returns True when the port is open, False on timeout or death.
    """
    deadline = time.monotonic() + timeout
    while True:
        if port_is_open(host, port, timeout=0.2):
            return True
        if alive is not None and not alive():
            return False
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


def wait_for_port_closed(host, port, timeout=10.0):
    """Wait until host:port refuses connections. Returns True if it did in time."""
    deadline = time.monotonic() + timeout
    while True:
        if not port_is_open(host, port, timeout=0.2):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
