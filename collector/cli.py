"""`collector`: ingest MQTT into PostgreSQL exactly once, and serve the status page."""

import argparse
import logging
import os
import signal
import socket
import sys

from fieldwatch import config as cfg
from fieldwatch import __version__

SCHEMA = {
    "mqtt": {
        "url": cfg.Setting("mqtt://127.0.0.1:1883", cfg.mqtt_url, "broker URL, mqtt://[user:pass@]host[:port]",
                           env="MQTT_URL"),
        "client_id": cfg.Setting("", help="MQTT client id; the session is kept under it (default collector-<host>)"),
        "share_group": cfg.Setting("", help="shared-subscription group: several collectors with the same group split the stream"),
        "session_expiry_s": cfg.Setting(86400, cfg.at_least(0), "how long the broker keeps our session and queued messages while we are away"),
        "receive_maximum": cfg.Setting(2000, cfg.at_least(1), "unacknowledged messages the broker may send us at once (bounds a batch)"),
        "keepalive_s": cfg.Setting(30, cfg.at_least(5), "MQTT keepalive"),
    },
    "database": {
        "url": cfg.Setting("postgresql://postgres@127.0.0.1:5432/fieldwatch", cfg.database_url,
                           "PostgreSQL libpq URL", env="DATABASE_URL"),
    },
    "ingest": {
        "batch_max": cfg.Setting(1000, cfg.at_least(1), "messages per transaction at most; keep it at most half of "
                                 "mqtt.receive_maximum, so the next batch can fill while one commits (docs/collector.md)"),
        "batch_age_ms": cfg.Setting(20, cfg.at_least(1), "commit a batch at the latest this long after its first message "
                                    "(or as soon as the previous commit ends, if later)"),
    },
    "web": {
        "listen": cfg.Setting("127.0.0.1:8080", help="status page address host:port; empty to disable"),
        "api_token": cfg.Setting("", help="token for the API's write endpoints (sending commands); empty: commands are refused"),
        "read_token": cfg.Setting("", help="token for reading the API; empty: reads are open"),
        "online_window_s": cfg.Setting(120, cfg.at_least(5), "a device reporting online counts as offline after this long without a message"),
    },
}

EPILOG = """commands:
  run       (default) apply migrations, then ingest and serve the status page until SIGTERM/Ctrl-C
  migrate   apply the schema migrations and exit
  config    print the effective configuration (tokens and URL passwords masked) and exit

settings (TOML file sections and keys; environment variables override the file):
""" + cfg.describe(SCHEMA, "COLLECTOR")


def main(argv=None):
    """Entry point of the `collector` console script."""
    p = argparse.ArgumentParser(prog="collector", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs="?", default="run", choices=("run", "migrate", "config"))
    p.add_argument("-c", "--config", metavar="FILE", default=os.environ.get("COLLECTOR_CONFIG"),
                   help="TOML config file (default: none, or $COLLECTOR_CONFIG)")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        conf = cfg.load(SCHEMA, args.config, "COLLECTOR")
    except cfg.ConfigError as e:
        print("collector: configuration error: %s" % e, file=sys.stderr)
        return 2
    if args.command == "config":
        print(cfg.show(conf))
        return 0
    import psycopg

    from collector.migrate import migrate
    try:
        migrate(conf["database"]["url"], log_progress=lambda m: logging.getLogger("collector").info(m))
    except psycopg.OperationalError as e:
        print("collector: cannot reach the database at %s: %s\n  Is PostgreSQL running, and does the database exist? "
              "Set DATABASE_URL or [database] url." % (_safe(conf["database"]["url"]), str(e).strip()), file=sys.stderr)
        return 1
    if args.command == "migrate":
        return 0
    return run(conf)


def _safe(url):
    # A URL for messages, password removed.
    from urllib.parse import urlsplit
    u = urlsplit(url)
    if u.password:
        return url.replace(":" + u.password + "@", ":***@")
    return url


def run(conf):
    """Ingest until SIGTERM or SIGINT; flush, commit and acknowledge before exiting."""
    from collector.ingest import Ingest
    from collector.metrics import Metrics
    from collector.mqtt import MqttLink
    from collector.store import Store
    from fieldwatch.wire import topics

    log = logging.getLogger("collector")
    m = conf["mqtt"]
    metrics = Metrics()
    link = MqttLink(m["url"], m["client_id"] or "collector-" + socket.gethostname(), topics.COLLECTOR_FILTERS,
                    m["share_group"], m["session_expiry_s"], m["receive_maximum"], m["keepalive_s"])
    ingest = Ingest(link, Store(conf["database"]["url"]), metrics, conf["ingest"]["batch_max"],
                    conf["ingest"]["batch_age_ms"])
    server = queries = None
    if conf["web"]["listen"]:
        from collector.queries import Queries
        from collector.web import create_app, serve
        queries = Queries(conf["database"]["url"], online_window_s=conf["web"]["online_window_s"])
        try:
            server = serve(create_app(queries, metrics, __version__, link, conf["web"]["api_token"],
                                      conf["web"]["read_token"]), conf["web"]["listen"])
        except OSError as e:
            print("collector: cannot serve the status page on %s: %s" % (conf["web"]["listen"], e), file=sys.stderr)
            return 1
        log.info("status page on http://%s/", conf["web"]["listen"])

    def on_signal(signum, frame):
        log.info("signal %d: flushing and stopping", signum)
        ingest.stop()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    link.start()
    log.info("ingesting from %s", m["url"].split("@")[-1])
    ingest.run()
    link.stop()
    if server is not None:
        server.close()
    if queries is not None:
        queries.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
