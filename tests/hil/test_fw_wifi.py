"""Wi-Fi reconnect (firmware/wifi.py) on the MicroPython Unix port with the fake
`network` module (firmware/fakes/network.py): FW_WIFI_FAILS=n makes the first n
connect() calls fail with the ESP32's "no AP found" status, network.drop() makes a
connected station lose its access point."""

import json



LO, HI = 40, 160


WIFI = r"""
import sys, time, json, network
from wifi import WiFi

def until_up(w, limit_ms):
    # ensure() in a loop as the main loop calls it; note each connect() and each backoff
    t0 = time.ticks_ms()
    seen = network.WLAN.connects
    calls = []      # ms of each connect() call
    delays = []     # backoff chosen after each failed attempt
    fails = w.attempts
    while not w.ensure():
        now = time.ticks_ms()
        if network.WLAN.connects != seen:
            seen = network.WLAN.connects
            calls.append(time.ticks_diff(now, t0))
        if w.attempts != fails:
            fails = w.attempts
            delays.append(w.delay_ms)
        if time.ticks_diff(now, t0) > limit_ms:
            return None
        time.sleep_ms(1)
    calls.append(time.ticks_diff(time.ticks_ms(), t0))  # the successful one (seen as up)
    return {"calls": calls, "delays": delays, "connects": network.WLAN.connects,
            "reconnects": w.reconnects, "attempts": w.attempts}

w = WiFi("plant-floor", "secret", backoff_lo_ms=%d, backoff_hi_ms=%d, wait_ms=1, attempt_ms=5000)
print(json.dumps(until_up(w, 20000)))
network.drop(w.sta)              # the access point goes away for good ...
network._fails = 2               # ... and the next two attempts find nothing
print(json.dumps(until_up(w, 20000)))
""" % (LO, HI)


def nominal(k):
    """The backoff before attempt k+1 without jitter: LO, 2 LO, 4 LO ... capped at HI."""
    return min(LO << k, HI)


def test_fw_wifi_reconnects_with_exponential_backoff(micropython, fw_path, tmp_path):
    r = micropython(WIFI, heapsize="100K", path=fw_path, cwd=str(tmp_path),
                    env={"FW_WIFI_FAILS": "4"}, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]
    first, second = (json.loads(ln) for ln in lines)
    # boot: 4 failed attempts, then the fifth connects
    assert first["connects"] == 5 and first["reconnects"] == 0 and first["attempts"] == 0
    assert len(first["delays"]) == 4
    for k, d in enumerate(first["delays"]):
        assert nominal(k) // 2 <= d <= nominal(k), (k, d)   # exponential, capped, jittered
    gaps = [b - a for a, b in zip(first["calls"], first["calls"][1:])]
    for k, d in enumerate(first["delays"]):
        assert gaps[k] >= d, "attempt %d came %d ms after the last, backoff %d" % (k + 2, gaps[k], d)
    # every failure was reported on the console
    assert r.stdout.count("wifi: 'plant-floor' not reached (status 201)") == 4 + 2
    # the access point drops: the backoff starts again from LO, and it counts a reconnect
    assert second["reconnects"] == 1 and second["connects"] == 5 + 3
    assert [nominal(k) // 2 <= d <= nominal(k) for k, d in enumerate(second["delays"])] == [True, True]
