"""Every benchmark in one command: `./run bench` (or `python -m fieldwatch.tools.bench`).

Runs, one after the other so they do not share the CPU:
  fieldwatch.tools.bench_ingest    the collector: raw broker drain vs collector drain, live
                        latency at 5,000 msg/s, waveform samples/s, raw COPY rate
  fieldwatch.tools.bench_agent     the Pi agent: outbox enqueue, backlog drain vs raw QoS 1
                        publish, agent CPU and RSS on the simulated chip
  fieldwatch.tools.bench_firmware  the ESP32 firmware on the MicroPython Unix port: its QoS 1
                        publish rate vs a bare client, heap, bytes per sample

Each prints its own table with the raw limit measured in the same run beside
its figures. With --json, prints one JSON object {"ingest": {...}, "agent":
{...}, "firmware": {...}}. --quick runs each benchmark's smaller variant.
Benchmarks report numbers; they never fail because a target was missed (exit
status 1 only when a benchmark could not run).
"""

import argparse
import json
import subprocess
import sys
import time

BENCHES = (("ingest", "fieldwatch.tools.bench_ingest"), ("agent", "fieldwatch.tools.bench_agent"), ("firmware", "fieldwatch.tools.bench_firmware"))


def main(argv=None):
    """Run the selected benchmarks in turn; 0 if all ran, 1 if one could not."""
    p = argparse.ArgumentParser(prog="python -m fieldwatch.tools.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="each benchmark's smaller run")
    p.add_argument("--json", action="store_true", help="one JSON object with every benchmark's figures")
    p.add_argument("--only", action="append", choices=[name for name, _ in BENCHES],
                   help="run only this benchmark (repeatable)")
    a = p.parse_args(argv)
    results, failed = {}, []
    for name, module in BENCHES:
        if a.only and name not in a.only:
            continue
        cmd = [sys.executable, "-m", module] + (["--quick"] if a.quick else []) + (["--json"] if a.json else [])
        print("[bench] %s: %s" % (name, " ".join(cmd[1:])), file=sys.stderr, flush=True)
        started = time.monotonic()
        r = subprocess.run(cmd, stdout=subprocess.PIPE if a.json else None, text=True)
        print("[bench] %s finished in %.0f s (exit %d)" % (name, time.monotonic() - started, r.returncode),
              file=sys.stderr, flush=True)
        if r.returncode != 0:
            failed.append(name)
            continue
        if a.json:
            try:
                results[name] = json.loads(r.stdout)
            except ValueError:
                failed.append(name)
                print("[bench] %s did not print one JSON object" % name, file=sys.stderr)
    if a.json:
        print(json.dumps(results, indent=2, sort_keys=True))
    if failed:
        print("[bench] could not run: %s" % ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
