# Runs after boot.py. Skips the application in safe mode (repeated crash loops),
# so mpremote can still reach the board; otherwise runs app.main() forever.
import safemode

if safemode.active():
    print("SAFE MODE: %d boots in a row crashed; app not started." % (safemode._read(safemode.PATH) - 1))
    print("Fix the cause, then: mpremote exec \"import safemode; safemode.clear()\" reset")
else:
    # The guard's module is not needed again until the run is healthy (app.py imports
    # it for that moment): out of the heap with it (~1 KB).
    import sys
    del safemode
    del sys.modules["safemode"]
    # Hold room for the sample window (6 bytes x rate_hz x window_s, at most 1024
    # entries) while the heap is still empty: importing the application leaves it in
    # small holes where a 4.8 KB window (800 Hz) no longer fits. App frees it just
    # before it allocates the window, which then lands in the hole. (config.py checks
    # the values properly later; anything odd here just reserves the most.)
    import json
    try:
        with open("config.json") as f:
            n = json.load(f)
        n = int(n.get("rate_hz", 800) * n.get("window_s", 1))
    except Exception:
        n = 1024
    room = [bytearray(6 * max(16, min(n, 1024)))]
    del n
    import app
    app.main(room=room)
