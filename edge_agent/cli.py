"""`edge-agent`: the Raspberry Pi edge agent: vibration features and waveforms to the collector, losing nothing."""

import argparse
import logging
import os
import signal
import sys

from fieldwatch import config as cfg
from edge_agent import config as agent_config
from edge_agent import logfmt, service
from edge_agent.statelock import StateDirInUse, StateLock
from fieldwatch import sdnotify

EPILOG = """commands:
  run       (default) sample, compute features, buffer in the outbox and send until SIGTERM/Ctrl-C;
            on SIGTERM it stops sampling, keeps sending for outbox.exit_drain_s, then exits
  config    print the effective configuration (tokens and URL passwords masked) and exit
  install-service [--config FILE] [--user USER] [--dry-run] [--unit-dir DIR]
            install the systemd unit (edge-agent.service) in DIR (default /etc/systemd/system),
            write a default config to FILE (default /etc/edge-agent/config.toml) if it is absent,
            then systemctl daemon-reload and enable --now; --dry-run prints what it would do

under systemd (Type=notify) the agent sends READY=1 once started, WATCHDOG=1 from its main loop
(every half $WATCHDOG_USEC) and STOPPING=1 on SIGTERM, to $NOTIFY_SOCKET

exit status: 0 stopped cleanly, 1 could not start (state directory, or another agent already uses it;
outbox, sensor) or install, 2 bad configuration

settings (TOML file sections and keys; environment variables override the file, flags override both):
""" + agent_config.describe()


def main(argv=None):
    """Entry point of the `edge-agent` console script."""
    p = argparse.ArgumentParser(prog="edge-agent", description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", nargs="?", default="run", choices=("run", "config", "install-service"))
    p.add_argument("-c", "--config", metavar="FILE", default=os.environ.get("EDGE_AGENT_CONFIG"),
                   help="TOML config file (default: none, or $EDGE_AGENT_CONFIG; install-service: %s)"
                   % service.CONFIG_PATH)
    p.add_argument("--device-id", metavar="ID", help="device id (overrides device.id)")
    p.add_argument("--hardware", choices=("real", "sim"), help="real ADXL345 or simulated chip (overrides sensor.hardware)")
    p.add_argument("--state-dir", metavar="DIR",
                   help="boot counter and outbox directory (overrides outbox.state_dir, default %s)"
                   % agent_config.DEFAULT_STATE_DIR)
    p.add_argument("-v", "--verbose", action="store_true", help="log debug detail (every stored and sent batch)")
    p.add_argument("--log-format", choices=("text", "json"), default="text",
                   help="log lines as text (default) or one JSON object per line (ts, level, logger, msg)")
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
            print("edge-agent install-service: %s" % e, file=sys.stderr)
            return 1
    logfmt.configure(logging.DEBUG if args.verbose else logging.INFO, args.log_format)
    logging.getLogger("paho").setLevel(logging.WARNING)
    try:
        conf = agent_config.load(args.config, overrides={
            ("device", "id"): args.device_id, ("sensor", "hardware"): args.hardware,
            ("outbox", "state_dir"): args.state_dir})
    except cfg.ConfigError as e:
        print("edge-agent: configuration error: %s" % e, file=sys.stderr)
        return 2
    if args.command == "config":
        print(cfg.show(conf))
        return 0
    rc, action = run(conf)
    if action == "reboot":
        # The reboot command: start over in a fresh process (a new boot of the agent).
        logging.getLogger("edge_agent").info("restarting the agent process")
        sdnotify.Notifier().notify("RELOADING=1", "STATUS=restarting the agent process (reboot command)")
        sys.stdout.flush()
        sys.stderr.flush()
        os.execv(sys.executable, [sys.executable, "-m", "edge_agent.cli"] + list(sys.argv[1:] if argv is None else argv))
    return rc


# The state directory's lock, held for the life of the process (the kernel releases it at exit or exec).
_state_lock = None


def open_accelerometer(conf):
    """The accelerometer (real ADXL345 or the simulated chip), opened at the configured rate and range."""
    from edge_agent.accel import Accelerometer
    s = conf["sensor"]
    acc = Accelerometer.create(hardware=s["hardware"], source=s["sim_source"])
    acc.open(s["rate_hz"], s["range_g"], s["watermark"])
    return acc


def reset_reason(state_dir, first_start):
    """Why this process started: power_on (first start), soft (clean exit before), unknown (crash, power cut)."""
    marker = os.path.join(state_dir, "clean_exit")
    clean = os.path.exists(marker)
    if clean:
        try:
            os.unlink(marker)
        except OSError:
            pass
    if first_start:
        return "power_on"
    return "soft" if clean else "unknown"


def run(conf):
    """Run the agent until SIGTERM/SIGINT; returns (exit status, 'reboot' or None)."""
    global _state_lock
    log = logging.getLogger("edge_agent")
    state_dir = conf["outbox"]["state_dir"]
    path = os.path.join(state_dir, "outbox.db")
    # One agent per state directory, decided before anything in it is touched (boot counter, outbox)
    # and before the heavy imports, so a refused start is cheap even when systemd retries it.
    try:
        os.makedirs(state_dir, exist_ok=True)
        _state_lock = StateLock(state_dir)
    except StateDirInUse as e:
        print("edge-agent: %s; stop it first or give this agent its own --state-dir" % e, file=sys.stderr)
        return 1, None
    except OSError as e:
        print("edge-agent: cannot use the state directory %s: %s\n  Set outbox.state_dir or --state-dir to a "
              "writable directory." % (state_dir, e.strerror or e), file=sys.stderr)
        return 1, None

    from edge_agent.agent import Agent
    from edge_agent.keys import KeySource, KeyStateError
    from edge_agent.outbox import Outbox, OutboxError
    from edge_agent.uplink import Uplink

    try:
        keys = KeySource(state_dir, floor=Outbox.max_boot_in(path))
        outbox = Outbox(path, keys, conf["device"]["id"], max_records=conf["outbox"]["max_records"],
                        resend_after_s=conf["outbox"]["resend_after_s"])
    except (KeyStateError, OutboxError, OSError) as e:
        print("edge-agent: cannot use the state directory %s: %s\n  Set outbox.state_dir or --state-dir to a "
              "writable directory." % (state_dir, getattr(e, "strerror", None) or e), file=sys.stderr)
        return 1, None
    reset = reset_reason(state_dir, keys.first_start)
    try:
        accel = open_accelerometer(conf)
    except ImportError as e:
        print("edge-agent: the accelerometer driver is missing: %s\n  Install the agent extras: "
              "pip install 'fieldwatch[agent]'" % e, file=sys.stderr)
        outbox.close()
        return 1, None
    except (OSError, ValueError, RuntimeError) as e:
        print("edge-agent: cannot open the %s accelerometer: %s" % (conf["sensor"]["hardware"], e), file=sys.stderr)
        outbox.close()
        return 1, None
    m = conf["mqtt"]
    dev = conf["device"]["id"]

    def make_uplink(status_payload, on_ack, on_command):
        return Uplink(m["url"], dev, status_payload, on_ack, on_command, client_id=m["client_id"] or dev,
                      keepalive_s=m["keepalive_s"], session_expiry_s=m["session_expiry_s"],
                      reconnect_min_s=m["reconnect_min_s"], reconnect_max_s=m["reconnect_max_s"],
                      max_unacked=m["max_unacked"])

    agent = Agent(conf, accel, outbox, keys, make_uplink, reset_reason=reset)
    notifier = sdnotify.Notifier()

    def heartbeat():
        # Only a healthy agent pings: the main loop just completed a pass and the sampler thread lives.
        if agent.sampler.is_alive():
            notifier.heartbeat(lambda: "boot %d, outbox %d records, broker %s" % (
                keys.boot, outbox.depth(), "connected" if agent.uplink.connected else "unreachable, buffering"))
    agent.heartbeat = heartbeat

    def on_signal(signum, frame):
        log.info("signal %d: stopping (draining for up to %.0f s)", signum, conf["outbox"]["exit_drain_s"])
        notifier.stopping("stopping: draining the outbox for up to %.0f s" % conf["outbox"]["exit_drain_s"])
        agent.stop()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("device %s, boot %d, broker %s, state %s, %s accelerometer at %s Hz", dev, keys.boot,
             m["url"].split("@")[-1], state_dir, conf["sensor"]["hardware"], conf["sensor"]["rate_hz"])
    try:
        agent.run()
    finally:
        outbox.close()
    try:
        with open(os.path.join(state_dir, "clean_exit"), "w") as f:
            f.write("clean\n")
    except OSError:
        pass
    log.info("stopped")
    return 0, agent.exit_action


if __name__ == "__main__":
    sys.exit(main())
