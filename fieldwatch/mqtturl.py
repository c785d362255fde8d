"""MQTT broker URLs, the one parser the edge agent, the collector and the tools share.

    mqtt://host[:port]                 plain TCP, port 1883 by default
    mqtts://user:pass@host[:port]      TLS, port 8883 by default

A user name or password holding ':', '@', '/' or '%' is written %-encoded in the URL
(`mqtt://dev:p%40ss@host` for the password `p@ss`) and comes back decoded. CPython only.
"""

from urllib.parse import unquote, urlsplit

DEFAULT_PORT = 1883
DEFAULT_TLS_PORT = 8883


def parse_url(url):
    """(host, port, username, password, tls) of an mqtt[s]:// URL; user and password %-decoded, None if absent."""
    u = urlsplit(url)
    tls = u.scheme == "mqtts"
    user = unquote(u.username) if u.username else None
    password = unquote(u.password) if u.password else None
    return u.hostname, u.port or (DEFAULT_TLS_PORT if tls else DEFAULT_PORT), user, password, tls
