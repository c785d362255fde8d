# The Fieldwatch wire contract, version 1: topics, payloads, limits.
#
# Written in the subset of Python that runs unchanged on CPython 3.11+ and on
# MicroPython 1.22+ (the ESP32 firmware imports it): no typing, dataclasses,
# enum or f-strings; plain dicts, lists and bytes.  docs/wire.md is the prose
# form of this package, and tests/vectors/wire_v1.json its golden vectors.

VERSION = 1
