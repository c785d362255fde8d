"""TOML configuration with environment overrides, shared by the collector and the edge agent.

A service declares its settings as a schema: {section: {key: Setting}}. Values
come from, in increasing priority: the schema defaults, the TOML file, and the
environment (`<PREFIX>_<SECTION>_<KEY>`, plus a few well-known names such as
MQTT_URL and DATABASE_URL). Every bad value raises ConfigError naming the key
and where the value came from, so a service can print one clear line.
"""

import os
import re
import tomllib
from urllib.parse import urlsplit


class ConfigError(Exception):
    """A configuration value that cannot be used; the message names the key."""


class Setting:
    """One setting: its default, a checker, and a one-line description for --help."""

    def __init__(self, default, check=None, help="", env=None):
        self.default = default
        self.check = check or _type_of(default)
        self.help = help
        self.env = env  # a well-known environment variable that overrides it, e.g. MQTT_URL


def _type_of(default):
    kind = type(default)

    def check(v):
        if kind is float and isinstance(v, int) and not isinstance(v, bool):
            return float(v)
        if kind is bool and isinstance(v, str):
            if v.lower() in ("1", "true", "yes", "on"):
                return True
            if v.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError("must be true or false")
        if isinstance(v, str) and kind in (int, float):
            try:
                return kind(v)
            except ValueError:
                raise ValueError("must be a %s" % ("whole number" if kind is int else "number")) from None
        if not isinstance(v, kind) or (kind is int and isinstance(v, bool)):
            raise ValueError("must be a %s" % {int: "whole number", float: "number", str: "string",
                                                bool: "boolean", list: "list"}.get(kind, kind.__name__))
        return v
    return check


def at_least(lo, kind=int):
    """A checker for numbers >= lo."""
    base = _type_of(kind(0))

    def check(v):
        v = base(v)
        if v < lo:
            raise ValueError("must be at least %s" % lo)
        return v
    return check


def one_of(*choices):
    """A checker for a string among choices."""
    def check(v):
        if v not in choices:
            raise ValueError("must be one of %s" % ", ".join(repr(c) for c in choices))
        return v
    return check


def mqtt_url(v):
    """Check an mqtt://[user:pass@]host[:port] URL."""
    if not isinstance(v, str):
        raise ValueError("must be a string like mqtt://host:1883")
    u = urlsplit(v)
    if u.scheme not in ("mqtt", "mqtts", "tcp") or not u.hostname:
        raise ValueError("must look like mqtt://[user:password@]host[:port], got %r" % v)
    try:
        u.port
    except ValueError:
        raise ValueError("has a bad port in %r" % v) from None
    return v


def database_url(v):
    """Check a libpq URL (postgresql://...) or key=value connection string."""
    if not isinstance(v, str) or not (v.startswith(("postgresql://", "postgres://")) or "=" in v):
        raise ValueError("must be a libpq URL like postgresql://user@host:5432/dbname, got %r" % (v,))
    return v


def load(schema, path=None, env_prefix="", environ=None):
    """Return {section: {key: value}} from defaults, the TOML file at path, and the environment."""
    environ = os.environ if environ is None else environ
    raw = {}
    if path:
        try:
            with open(path, "rb") as f:
                raw = tomllib.load(f)
        except FileNotFoundError:
            raise ConfigError("config file %s does not exist" % path) from None
        except tomllib.TOMLDecodeError as e:
            raise ConfigError("config file %s is not valid TOML: %s" % (path, e)) from None
    for section in raw:
        if section not in schema:
            raise ConfigError("%s: unknown section [%s]; known: %s" % (path, section, ", ".join(schema)))
        if not isinstance(raw[section], dict):
            raise ConfigError("%s: %s must be a [section]" % (path, section))
        for key in raw[section]:
            if key not in schema[section]:
                raise ConfigError("%s: unknown key %s.%s; known: %s"
                                  % (path, section, key, ", ".join(schema[section])))
    out = {}
    for section, settings in schema.items():
        out[section] = {}
        for key, s in settings.items():
            value, origin = s.default, "default"
            if key in raw.get(section, {}):
                value, origin = raw[section][key], path
            name = ("%s_%s_%s" % (env_prefix, section, key)).upper()
            if env_prefix and name in environ:
                value, origin = environ[name], "environment variable " + name
            if s.env and environ.get(s.env):
                value, origin = environ[s.env], "environment variable " + s.env
            try:
                out[section][key] = s.check(value)
            except ValueError as e:
                raise ConfigError("%s.%s %s (from %s)" % (section, key, e, origin)) from None
    return out


def describe(schema, env_prefix=""):
    """Text for --help: every setting, its default and its environment variable."""
    lines = []
    for section, settings in schema.items():
        lines.append("[%s]" % section)
        for key, s in settings.items():
            env = ("%s_%s_%s" % (env_prefix, section, key)).upper()
            if s.env:
                env = s.env + " or " + env
            lines.append("  %-18s %s (default %r; env %s)" % (key, s.help, s.default, env))
    return "\n".join(lines)


def _masked(key, value):
    # Secrets never reach a terminal or a log: tokens and passwords whole, a URL's password part.
    if isinstance(value, str) and value:
        if key.endswith(("token", "password")):
            return "***"
        return re.sub(r"^([a-z][a-z0-9+.-]*://[^:/@]*):[^@/]*@", r"\1:***@", value)
    return value


def show(conf):
    """The effective configuration as TOML-like text, secrets masked (the `config` subcommand)."""
    lines = []
    for section, values in conf.items():
        lines.append("[%s]" % section)
        lines.extend("%s = %r" % (k, _masked(k, v)) for k, v in values.items())
    return "\n".join(lines)
