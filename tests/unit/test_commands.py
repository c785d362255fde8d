"""Command validation and answers (edge_agent/commands.py), without an agent: check() is pure."""

import json

import pytest

from edge_agent import commands
from fieldwatch.wire import codec, topics

DEV = "pump-07"


def cmd(cid, name, args=None):
    return codec.encode_cmd(cid, name, args or {}, 1751327990000)


def test_commands_identity_only_of_an_answerable_payload():
    assert commands.command_identity(cmd("c-1", "wake")) == ("c-1", "wake")
    for payload in (b"not json", b"[1, 2]", json.dumps({"id": "", "cmd": "wake"}).encode(),
                    json.dumps({"id": "x" * (codec.MAX_CMD_ID + 1), "cmd": "wake"}).encode(),
                    json.dumps({"id": "a\u0000b", "cmd": "wake"}).encode(),
                    json.dumps({"id": 7, "cmd": "wake"}).encode(),
                    json.dumps({"id": "c-2", "cmd": "explode"}).encode()):
        assert commands.command_identity(payload) == (None, None), payload


def test_commands_valid_command_runs_with_its_arguments():
    c = commands.check(DEV, cmd("rate-1", "set_rate", {"hz": 400}), retained=False)
    assert (c.action, c.cid, c.name, c.args, c.error) == ("run", "rate-1", "set_rate", {"hz": 400}, None)


def test_commands_retained_command_is_refused_or_logged():
    c = commands.check(DEV, cmd("r-1", "reboot"), retained=True)
    assert (c.action, c.cid, c.name) == ("refuse", "r-1", "reboot") and "retained" in c.error
    c = commands.check(DEV, b"{}", retained=True)
    assert c.action == "log" and c.cid is None and "retained" in c.error


def test_commands_bad_argument_is_refused_with_the_codec_error():
    payload = json.dumps({"v": 1, "id": "bad-1", "cmd": "set_rate", "args": {"hz": 7}, "ts": 0}).encode()
    c = commands.check(DEV, payload, retained=False)
    assert (c.action, c.cid, c.name) == ("refuse", "bad-1", "set_rate")
    assert c.error.startswith("bad_argument: set_rate.hz=7")


def test_commands_unanswerable_payload_is_logged_with_the_codec_error():
    c = commands.check(DEV, b"not a command 3", retained=False)
    assert c.action == "log" and c.error.startswith("command rejected: ")
    with pytest.raises(codec.WireError) as e:
        codec.decode(topics.topic(DEV, "cmd"), b"not a command 3")
    assert c.error == "command rejected: %s: %s" % (e.value.code, e.value.detail)


def test_commands_result_body_carries_detail_and_a_bounded_error():
    assert commands.result_body("c-1", "flush", True, {"depth": 3}) == {
        "id": "c-1", "cmd": "flush", "ok": True, "detail": {"depth": 3}}
    body = commands.result_body("c-2", "sleep", False, error="x" * 2000)
    assert body["ok"] is False and len(body["error"]) == codec.MAX_LOG_TEXT and "detail" not in body
    assert commands.result_body("c-3", "wake", False)["error"] == "failed"
