"""CPython helpers shared by the collector, the edge agent and the tools (not the firmware)."""

__version__ = "0.1.0"
