# The commands a board carries out (docs/wire.md, "cmd"): one function per command
# name in run(), the counterpart of the Pi's edge_agent/commands.py handlers.
#
# Loaded by App.command() for each command and dropped from sys.modules after it:
# commands are rare, and this code's ~2 KB are worth more to the heap in between.
# check() says whom a result answers and why a command must not run (it failed
# validation, or it was retained: as the Pi's edge_agent/commands.py, never run);
# App.command() skips repeated ids and stores the one result; whatever run()
# raises (MemoryError too) is answered ok false.

import time

from micropython import const

from fieldwatch.wire.contract import COMMANDS, MAX_CMD_ID, MAX_PAYLOAD, is_text, loads

_I2C_MAX_HZ = const(800)   # over I2C at 400 kHz the FIFO cannot be drained faster (adxl345.py)


def check(m):
    """(id, cmd, why it must not run or None) for an inbox cmd (uplink.Link); id None: no result can name it."""
    cid, name, why = m["id"], m["cmd"], None
    bad = m.get("bad")
    if bad is not None:
        # failed validation: answered if its id and command name can be read
        cid = name = None
        p = m["payload"]
        msg = loads(p) if len(p) <= MAX_PAYLOAD else None
        if isinstance(msg, dict) and is_text(msg.get("id"), 1, MAX_CMD_ID) and msg.get("cmd") in COMMANDS:
            cid, name = msg["id"], msg["cmd"]
        code = getattr(bad, "code", None)
        why = "%s: %s" % (code, bad.detail) if code else "%s: %s" % (type(bad).__name__, bad)
    if m.get("retained"):
        why = "retained command refused (commands must not be retained)"
    return cid, name, why


def run(app, name, args):
    """Carry out the valid command `name` on App `app`; the result's detail (or None); raises on failure."""
    adxl = app.adxl
    if name == "set_rate":
        hz = args["hz"]
        if hz > _I2C_MAX_HZ:
            raise ValueError("%s Hz: over I2C the FIFO is not drained above 800 Hz (needs SPI)" % hz)
        app._alloc_window(hz)   # MemoryError: the window and the rate stay as they were
        adxl.configure(hz, adxl.range_g)
        return {"hz": hz}
    if name == "set_range":
        adxl.configure(adxl.rate_hz, args["g"])
        return {"g": args["g"]}
    if name == "sleep":
        # without s: asleep until `wake`; the status says sleeping from the next step
        adxl.standby()
        app.sleeping = True
        s = args.get("s")
        app.sleep_until = None if s is None else time.ticks_add(time.ticks_ms(), 1000 * s)
        app.status_at = time.ticks_ms()
        return None if s is None else {"s": s}
    if name == "wake":
        was = app.sleeping
        app._wake()
        return {"was_sleeping": was}
    if name == "capture":
        if app.sleeping:
            raise ValueError("the sensor is asleep; send wake first")
        app.capture_n = args.get("n", app.cfg["wave_samples"])
        return {"n": min(app.capture_n, app.window_n)}
    if name == "flush":
        if app.fixes:
            app._store_fixes()
        app.outbox.rewind()
        return {"depth": app.outbox.depth()}
    return None  # reboot: App.command() resets after the result is stored
