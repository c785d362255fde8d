# Runs after boot.py. Skips the application in safe mode (repeated crash loops),
# so mpremote can still reach the board; otherwise runs app.main() forever.
import safemode

if safemode.active():
    print("SAFE MODE: %d boots in a row crashed; app not started." % (safemode._read(safemode.PATH) - 1))
    print("Fix the cause, then: mpremote exec \"import safemode; safemode.clear()\" reset")
else:
    import app
    app.main()
