# Runs first on every reset. Keep it tiny: anything that fails here happens before
# the REPL is reachable. Counts the boot for the crash-loop guard (safemode.py).
import safemode

safemode.boot()
