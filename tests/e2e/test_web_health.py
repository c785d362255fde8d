"""/healthz and /readyz of the real collector while its broker and its database come and go."""

import time

from harness.ports import free_port
from tests.e2e.web_fleet import get
from tests.harness.collector import CollectorProcess


def _wait_ready(url, want, timeout=30):
    end = time.monotonic() + timeout
    while True:
        status, body = get(url + "/readyz")
        if (status == 200) == want or time.monotonic() > end:
            return status, body
        time.sleep(0.2)


def test_web_readyz_names_the_broker_or_database_that_is_away(fresh_broker, fresh_db, pg_cluster):
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    c = CollectorProcess(fresh_broker.url, fresh_db, web_listen="127.0.0.1:%d" % port).start()
    try:
        assert get(url + "/healthz") == (200, {"ok": True})
        status, body = _wait_ready(url, True)
        assert status == 200 and body == {"ready": True, "database": "ok", "broker": "ok"}

        fresh_broker.stop()
        status, body = _wait_ready(url, False)
        assert status == 503 and body["broker"] == "not connected" and body["database"] == "ok"
        assert get(url + "/healthz")[0] == 200, "alive even when not ready"
        fresh_broker.start()
        status, body = _wait_ready(url, True)
        assert status == 200, body

        pg_cluster.stop()
        try:
            status, body = _wait_ready(url, False)
            assert status == 503 and body["database"].startswith("unreachable") and body["broker"] == "ok"
            status, body = get(url + "/api/v1/devices")
            assert status == 503 and "database is not reachable" in body["error"]
        finally:
            pg_cluster.start()
        status, body = _wait_ready(url, True)
        assert status == 200, body
    finally:
        c.terminate()
