"""The console scripts (`collector`, `edge-agent`, `fleetctl`), whatever extras are installed.

Every script is installed by every install of the distribution, but the libraries
a command needs come with its extra: `pip install 'fieldwatch[collector]'` for the
collector, `fieldwatch[agent]` for the edge agent. A script whose extra is missing
ends with one line naming the extra to install, not a ModuleNotFoundError traceback.
Only a missing module that belongs to the extra is explained that way; any other
ModuleNotFoundError is a bug and keeps its traceback.
"""

import importlib
import sys

# Top-level modules that each extra's libraries provide (pyproject.toml, [project.optional-dependencies]).
EXTRA_MODULES = {
    "agent": ("adafruit_adxl34x", "adafruit_blinka", "adafruit_bus_device", "board", "busio", "digitalio",
              "microcontroller", "gpiozero", "gpsd", "paho", "numpy"),
    "collector": ("paho", "psycopg", "psycopg_pool", "psycopg_binary", "flask", "werkzeug", "jinja2", "waitress",
                  "prometheus_client"),
}


def missing_extra_message(prog, extra, error):
    """The one line for `error` (a ModuleNotFoundError) if it is a library of `extra`, else None."""
    top = (error.name or "").split(".")[0]
    if top not in EXTRA_MODULES.get(extra, ()):
        return None
    return ("%s: the Python package that provides '%s' is not installed; it comes with the %s extra: "
            "pip install 'fieldwatch[%s]'" % (prog, top, extra, extra))


def run(prog, extra, target, argv=None):
    """Import `target` ("module:function") and call it with argv; exit 1 with one line if `extra` is missing."""
    module_name, func_name = target.split(":")
    try:
        main = getattr(importlib.import_module(module_name), func_name)
        return main(argv)
    except ModuleNotFoundError as e:
        text = missing_extra_message(prog, extra, e) if extra else None
        if text is None:
            raise
        print(text, file=sys.stderr)
        return 1


def collector():
    """`collector`: needs the collector extra."""
    sys.exit(run("collector", "collector", "collector.cli:main"))


def edge_agent():
    """`edge-agent`: needs the agent extra."""
    sys.exit(run("edge-agent", "agent", "edge_agent.cli:main"))


def fleetctl():
    """`fleetctl`: the standard library only."""
    sys.exit(run("fleetctl", None, "fieldwatch.tools.fleetctl:main"))
