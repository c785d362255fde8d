# Runs first on every reset. Keep it tiny: anything that fails here happens before
# the REPL is reachable. Counts the boot for the crash-loop guard (safemode.py).
import safemode

safemode.boot()
del safemode   # main.py drops the module itself once it has checked for safe mode
