# Fake `network` for the MicroPython Unix port (tests, simulated boards; never flashed).
# WLAN(STA_IF) "connects" to any SSID; FW_WIFI_FAILS=n makes the first n connect()
# calls fail (STAT_NO_AP_FOUND), so the reconnect backoff can be tested.

import os

STA_IF = 0
AP_IF = 1
STAT_IDLE = 1000
STAT_CONNECTING = 1001
STAT_GOT_IP = 1010
STAT_NO_AP_FOUND = 201
STAT_WRONG_PASSWORD = 202

_fails = int(os.getenv("FW_WIFI_FAILS") or 0) if hasattr(os, "getenv") else 0


class WLAN:
    """Station interface stand-in."""
    connects = 0

    def __init__(self, interface=STA_IF):
        self._active = False
        self._status = STAT_IDLE
        self._cfg = {"mac": b"\x24\x6f\x28\x00\x00\x01"}

    def active(self, on=None):
        if on is None:
            return self._active
        self._active = bool(on)

    def connect(self, ssid=None, key=None):
        global _fails
        WLAN.connects += 1
        if _fails > 0:
            _fails -= 1
            self._status = STAT_NO_AP_FOUND
        else:
            self._status = STAT_GOT_IP

    def disconnect(self):
        self._status = STAT_IDLE

    def isconnected(self):
        return self._status == STAT_GOT_IP

    def status(self, param=None):
        if param == "rssi":
            return -55
        return self._status

    def ifconfig(self, cfg=None):
        return ("127.0.0.1", "255.0.0.0", "127.0.0.1", "127.0.0.1")

    def config(self, *args, **kw):
        if args:
            return self._cfg.get(args[0])
        self._cfg.update(kw)
