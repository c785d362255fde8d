# SNTP client (RFC 4330): one request, the server's transmit time in epoch ms.
#
# Imported by clock.Clock.sync_ntp() only while it syncs (at boot and every few
# hours) and dropped again, so its code does not sit in the heap between syncs.

import socket
import struct
import time

try:
    from micropython import const
except ImportError:
    def const(x):
        return x

_NTP_DELTA_S = const(2208988800)   # 1900-01-01 to 1970-01-01


def time_ms(host, port=123, timeout_s=1):
    """One SNTP (RFC 4330) request: server transmit time in epoch ms, or None."""
    query = bytearray(48)
    query[0] = 0x1B  # LI 0, version 3, mode 3 (client)
    s = None
    try:
        addr = socket.getaddrinfo(host, port, 0, socket.SOCK_DGRAM)[0][-1]
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(timeout_s)
        t0 = time.ticks_ms()
        s.sendto(query, addr)
        msg = s.recv(48)
        rtt = time.ticks_diff(time.ticks_ms(), t0)
    except OSError:
        return None
    finally:
        if s is not None:
            s.close()
    if len(msg) < 48 or msg[1] == 0:  # stratum 0: kiss-of-death
        return None
    secs, frac = struct.unpack("!II", msg[40:48])
    if secs == 0:
        return None
    # transmit time + half the round trip
    return (secs - _NTP_DELTA_S) * 1000 + (frac * 1000 >> 32) + rtt // 2
