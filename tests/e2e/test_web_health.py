"""/healthz and /readyz of the real collector while its broker and its database come and go; read and write tokens."""

import subprocess
import time

from fieldwatch.devservices.collector import BIN, CollectorProcess
from fieldwatch.devservices.ports import free_port
from tests.e2e.web_fleet import get, request


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
        assert status == 200 and body == {"ready": True, "database": "ok", "broker": "ok", "ingest": "ok"}

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


def test_web_read_token_protects_the_api_but_not_health_metrics_or_page_shells(broker, fresh_db):
    port = free_port()
    url = "http://127.0.0.1:%d" % port
    c = CollectorProcess(broker.url, fresh_db, client_id="web-read-token-%d" % port,
                         web_listen="127.0.0.1:%d" % port,
                         extra_env={"COLLECTOR_WEB_READ_TOKEN": "reader", "COLLECTOR_WEB_API_TOKEN": "writer"}).start()
    try:
        status, body = get(url + "/api/v1/devices")
        assert status == 401 and "needs a token" in body["error"]
        status, body = get(url + "/api/v1/devices", token="nope")
        assert status == 403
        for token in ("reader", "writer"):
            assert get(url + "/api/v1/devices", token=token)[0] == 200
        assert get(url + "/api/v1/openapi.json")[0] == 200, "the description stays readable"
        status, body = request("POST", url + "/api/v1/devices/pump-01/commands", {"cmd": "wake"}, token="reader")
        assert status == 403, "the read token does not allow writes"
        for path in ("/healthz", "/metrics", "/", "/quarantine", "/devices/pump-01"):
            assert get(url + path)[0] == 200, path
        status, page = get(url + "/")
        assert 'class="device"' not in page, "with reads protected, the page's rows come only through the API"
        out = subprocess.run([str(BIN), "config"], capture_output=True, text=True, env=c.env).stdout
        assert "reader" not in out and "writer" not in out and "api_token = '***'" in out, "config hides tokens"
    finally:
        c.terminate()
