# Fake `network` for the MicroPython Unix port (tests, simulated boards; never flashed).
# WLAN(STA_IF) "connects" to any SSID. FW_WIFI_FAILS=n makes the first n connect()
# calls fail (status 201, STAT_NO_AP_FOUND on the ESP32), so the reconnect backoff can
# be tested; drop() makes a connected station lose its access point.
# Only what firmware/wifi.py calls: on a board `network` is built in and costs no
# heap, this stand-in does (every name is a qstr on the Unix port's heap).

import os

STA_IF = 0
STAT_GOT_IP = 1010

_fails = int(os.getenv("FW_WIFI_FAILS") or 0)


class WLAN:
    """Station interface stand-in; WLAN.connects counts connect() calls."""
    connects = 0

    def __init__(self, interface=STA_IF):
        self.st = 1000  # STAT_IDLE

    def active(self, on=None):
        return True

    def connect(self, ssid=None, key=None):
        global _fails
        WLAN.connects += 1
        if _fails > 0:
            _fails -= 1
            self.st = 201  # STAT_NO_AP_FOUND
        else:
            self.st = STAT_GOT_IP

    def disconnect(self):
        self.st = 1000

    def isconnected(self):
        return self.st == STAT_GOT_IP

    def status(self, param=None):
        return -55 if param == "rssi" else self.st


def drop(sta):
    """The access point goes away: the station is no longer connected."""
    sta.st = 201
