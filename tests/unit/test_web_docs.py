"""docs/api.md keeps up with the code: every fleetctl command and option, every web setting, every API path."""

import argparse
import json
from pathlib import Path

from collector.cli import SCHEMA
from fieldwatch.tools import fleetctl

ROOT = Path(__file__).resolve().parents[2]
DOC = (ROOT / "docs" / "api.md").read_text()


def test_web_docs_name_every_fleetctl_command_and_option():
    parsers = [fleetctl.parser()]
    while parsers:
        p = parsers.pop()
        for action in p._actions:
            for opt in action.option_strings:
                if opt.startswith("--") and opt != "--help":
                    assert "`%s`" % opt in DOC, "fleetctl option %s is not in docs/api.md" % opt
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    assert "fleetctl %s" % name in DOC, "fleetctl %s is not in docs/api.md" % name
                    parsers.append(sub)


def test_web_docs_name_every_web_setting_and_api_path():
    for key in SCHEMA["web"]:
        if key != "listen":
            assert "web.%s" % key in DOC, "web.%s is not in docs/api.md" % key
    spec = json.loads((ROOT / "collector" / "openapi.json").read_text())
    for path in spec["paths"]:
        shown = "/api/v1" + path.replace("{device_id}", "<id>").replace("{cmd_id}", "<cmd_id>")
        assert shown in DOC, "%s is not in docs/api.md" % shown
