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
        "storage": cfg.Setting("auto", cfg.one_of("auto", "timescaledb", "partitioned"),
                               "storage of a new database: auto (TimescaleDB if the server has it, else partitioned "
                               "tables), timescaledb, or partitioned; a database keeps the one it was made with"),
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
        "status_stale_s": cfg.Setting(90, cfg.at_least(1), "the pages mark a device heard recently whose last status is "
                                      "older than this, s, as \"status stale\" (3 x the devices' 30 s status interval)"),
    },
}

EPILOG = """commands:
  run       (default) serve /healthz and /readyz, wait for the database (then migrate) and the broker,
            then ingest and serve the status page until SIGTERM/Ctrl-C
  migrate   apply the schema migrations and exit
  config    print the effective configuration (tokens and URL passwords masked) and exit
  install-service [--config FILE] [--user USER] [--dry-run] [--unit-dir DIR]
            install the systemd unit (collector.service) in DIR (default /etc/systemd/system),
            write a config (default /etc/fieldwatch/collector.toml) if there is none, enable and
            start it; --dry-run prints every step and changes nothing (docs/collector.md)

settings (TOML file sections and keys; environment variables override the file):
""" + cfg.describe(SCHEMA, "COLLECTOR")


def main(argv=None):
    """Entry point of the `collector` console script."""
    from collector import service

    p = argparse.ArgumentParser(prog="collector", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs="?", default="run", choices=("run", "migrate", "config", "install-service"))
    p.add_argument("-c", "--config", metavar="FILE", default=os.environ.get("COLLECTOR_CONFIG"),
                   help="TOML config file (default: none, or $COLLECTOR_CONFIG; install-service: %s)"
                   % service.CONFIG_PATH)
    p.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    p.add_argument("--user", metavar="USER", help="install-service: run the service as USER (default: a dynamic user)")
    p.add_argument("--unit-dir", metavar="DIR", default=service.UNIT_DIR,
                   help="install-service: where to write the unit (default %(default)s; elsewhere, systemctl is not run)")
    p.add_argument("--dry-run", action="store_true", help="install-service: print what would be done, change nothing")
    args = p.parse_args(argv)
    if args.command == "install-service":
        try:
            return service.install(args.config or service.CONFIG_PATH, user=args.user, unit_dir=args.unit_dir,
                                   dry_run=args.dry_run)
        except service.InstallError as e:
            print("collector install-service: %s" % e, file=sys.stderr)
            return 1
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
    if args.command == "migrate":
        return migrate_once(conf)
    return run(conf)


def migrate_once(conf):
    """`collector migrate`: one attempt, exit status 1 with the reason when the database is not there."""
    import psycopg

    from collector.migrate import StorageError, migrate
    db = conf["database"]
    try:
        migrate(db["url"], log_progress=logging.getLogger("collector").info, storage=db["storage"])
    except StorageError as e:
        print("collector: %s" % e, file=sys.stderr)
        return 1
    except psycopg.OperationalError as e:
        print("collector: cannot reach the database at %s: %s\n  Is PostgreSQL running, and does the database exist? "
              "Set DATABASE_URL or [database] url." % (_safe(db["url"]), str(e).strip()), file=sys.stderr)
        return 1
    return 0


def _safe(url):
    # A URL for messages, password removed.
    from urllib.parse import urlsplit
    u = urlsplit(url)
    if u.password:
        return url.replace(":" + u.password + "@", ":***@")
    return url


def run(conf):
    """Serve health, wait for database and broker, then ingest until SIGTERM or SIGINT; flush, commit and ack before exiting."""
    from collector.ingest import Ingest
    from collector.metrics import Metrics
    from collector.migrate import migrate
    from collector.mqtt import MqttLink
    from collector.startup import Startup, StartupFailed, wait_for_broker, wait_for_database
    from collector.store import Store
    from fieldwatch import sdnotify
    from fieldwatch.wire import topics

    log = logging.getLogger("collector")
    m, db = conf["mqtt"], conf["database"]
    notifier = sdnotify.Notifier()
    startup = Startup(on_change=lambda text: notifier.status("waiting for " + text if text else "ingesting"))
    metrics = Metrics()
    link = MqttLink(m["url"], m["client_id"] or "collector-" + socket.gethostname(), topics.COLLECTOR_FILTERS,
                    m["share_group"], m["session_expiry_s"], m["receive_maximum"], m["keepalive_s"])
    ingest = None

    def on_signal(signum, frame):
        log.info("signal %d: flushing and stopping", signum)
        notifier.stopping("stopping")
        startup.stop.set()
        if ingest is not None:
            ingest.stop()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    server = queries = None
    if conf["web"]["listen"]:
        # First, so /healthz answers and /readyz says what the start-up waits for.
        from collector.queries import Queries
        from collector.web import create_app, serve
        queries = Queries(db["url"], online_window_s=conf["web"]["online_window_s"])
        try:
            server = serve(create_app(queries, metrics, __version__, link, conf["web"]["api_token"],
                                      conf["web"]["read_token"], starting=lambda: startup.waiting_for,
                                      status_stale_s=conf["web"]["status_stale_s"]),
                           conf["web"]["listen"])
        except OSError as e:
            print("collector: cannot serve the status page on %s: %s" % (conf["web"]["listen"], e), file=sys.stderr)
            queries.close()
            return 1
        log.info("status page on http://%s/", conf["web"]["listen"])

    def close_web():
        if server is not None:
            server.close()
        if queries is not None:
            queries.close()

    broker = "%s:%d" % (link.host, link.port)
    try:
        ok = wait_for_database(startup, lambda: migrate(db["url"], log_progress=log.info, storage=db["storage"]),
                               _safe(db["url"])) and wait_for_broker(startup, link, broker)
    except StartupFailed as e:
        print("collector: %s" % e, file=sys.stderr)
        close_web()
        return 1
    if not ok:
        log.info("stopped before start-up finished (database and broker untouched)")
        close_web()
        return 0
    ingest = Ingest(link, Store(db["url"]), metrics, conf["ingest"]["batch_max"], conf["ingest"]["batch_age_ms"])
    accepted = []                    # the broker has accepted us once (CONNACK): READY=1 may go out

    def heartbeat():
        # From every pass of the ingest loop: READY=1 once the broker has accepted us, then WATCHDOG=1.
        if not accepted:
            if not link.connected.is_set():
                return
            accepted.append(True)
        notifier.heartbeat(lambda: "ingesting; %d messages, %d acks pending, broker %s" % (
            metrics.counters["messages_received"], metrics.acks_pending,
            "connected" if link.connected.is_set() else "reconnecting"))
    ingest.heartbeat = heartbeat
    if startup.stop.is_set():        # SIGTERM came between the waits and here
        ingest.stop()
    link.start()
    startup.waiting(None)
    log.info("ingesting from %s", m["url"].split("@")[-1])
    ingest.run()
    link.stop()
    close_web()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
