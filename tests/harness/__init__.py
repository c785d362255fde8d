"""Test-only helpers; the services themselves (Mosquitto, PostgreSQL, the collector process,
MicroPython, free ports) are `fieldwatch.devservices`, shared with the demo and the benchmarks.

- `tests.harness.listener.DeviceListener`: a subscriber to one device's topics on the real broker.
- `tests.harness.waiting.wait_for`: poll until something holds, fail with what was seen.
- `tests.harness.bench.run_json`: run a benchmark the way its smoke tests do.
- `tests.harness.systemd`: boot a real systemd as PID 1 in private namespaces, for the agent's unit.

Import these as `tests.harness.x` only (tests/__init__.py makes `tests` a package; nothing
puts tests/ itself on sys.path), so that no module is loaded under two names.
"""
