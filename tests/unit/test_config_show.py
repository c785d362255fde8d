"""`collector config` / `edge-agent config`: the effective settings, secrets masked."""

import subprocess
import sys

from fieldwatch import config as cfg


def test_config_show_masks_tokens_and_url_passwords():
    text = cfg.show({"mqtt": {"url": "mqtt://site:s3cret@broker.example:1883", "keepalive_s": 30},
                     "db": {"url": "postgresql://ingest:pw@db/fieldwatch", "plain": "postgresql:///fieldwatch"},
                     "web": {"api_token": "abc", "read_token": ""}})
    assert "s3cret" not in text and "pw@" not in text and "abc" not in text
    assert "url = 'mqtt://site:***@broker.example:1883'" in text
    assert "url = 'postgresql://ingest:***@db/fieldwatch'" in text
    assert "plain = 'postgresql:///fieldwatch'" in text and "keepalive_s = 30" in text
    assert "api_token = '***'" in text and "read_token = ''" in text
    assert text.splitlines()[0] == "[mqtt]"


def test_config_subcommands_never_print_a_password():
    env = {"MQTT_URL": "mqtt://dev:hunter2@127.0.0.1:1883", "DATABASE_URL": "postgresql://c:hunter3@127.0.0.1/x",
           "PATH": "/usr/bin:/bin"}
    for cmd in (["collector.cli", "config"], ["edge_agent.cli", "config", "--device-id", "pump-01"]):
        r = subprocess.run([sys.executable, "-m"] + cmd, capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode == 0, r.stderr
        assert "dev:***@127.0.0.1:1883" in r.stdout
        assert "hunter2" not in r.stdout and "hunter3" not in r.stdout
