#!/usr/bin/env bash
# Make this machine ready to run Fieldwatch: Debian packages and the Python venv.
# Idempotent and quiet when there is nothing to do. Called by ./run.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$here/.venv"

say() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

# --- Debian packages -------------------------------------------------------
# command that must exist -> package that provides it
declare -A need=(
    [mosquitto]=mosquitto
    [gpsd]=gpsd
    [gpsfake]=gpsd-clients
    [chromium]=chromium              # the status page's browser test (headless)
    [chromedriver]=chromium-driver   # Selenium drives Debian's chromium through it; no browser download
)
missing=()
for c in "${!need[@]}"; do
    command -v "$c" >/dev/null 2>&1 || [ -x "/usr/sbin/$c" ] || missing+=("${need[$c]}")
done
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)

if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    if ! command -v apt-get >/dev/null 2>&1; then
        die "apt-get not found. Install these packages with your system's package manager, then run again: ${missing[*]}"
    fi
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
            SUDO=sudo
        else
            die "not root. Run as root, or install them first: sudo apt-get install ${missing[*]}"
        fi
    else
        SUDO=
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ! $SUDO apt-get install -y --no-install-recommends "${missing[@]}" >/tmp/fieldwatch-apt.log 2>&1; then
        say "apt-get install failed; refreshing the package lists and trying once more"
        $SUDO apt-get update >>/tmp/fieldwatch-apt.log 2>&1 || true
        $SUDO apt-get install -y --no-install-recommends "${missing[@]}" >>/tmp/fieldwatch-apt.log 2>&1 \
            || die "could not install ${missing[*]} (log: /tmp/fieldwatch-apt.log)"
    fi
fi

# --- Python ----------------------------------------------------------------
python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' \
    || die "Python 3.11 or newer is needed (found $(python3 --version 2>&1))"

stamp="$venv/.fieldwatch-installed"
want="$(sha256sum "$here/pyproject.toml" | cut -c1-16)"
if [ ! -x "$venv/bin/python" ]; then
    say "creating virtual environment in .venv"
    python3 -m venv "$venv" || die "python3 -m venv failed; on Debian install python3-venv"
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    say "installing Python packages into .venv (first run takes a minute)"
    "$venv/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    # The full pip output goes to a log, shown only when the install fails (setuptools'
    # editable build prints a page of warnings on every successful install).
    if ! "$venv/bin/python" -m pip install -q --disable-pip-version-check -e "$here[agent,collector,dev]" \
            >"$venv/pip-install.log" 2>&1; then
        tail -n 30 "$venv/pip-install.log" >&2
        die "pip install failed (full log: $venv/pip-install.log)"
    fi
    "$venv/bin/python" -c 'import paho.mqtt, psycopg, flask, pytest' \
        || die "Python packages did not install; see the pip output above"
    echo "$want" >"$stamp"
fi
