"""Proof that the test harness drives real services: Mosquitto restarts, kills and
persistence with a paho-mqtt 2.x client, PostgreSQL crash recovery with psycopg 3,
and per-test databases. Every wait has a timeout and fails with a message."""

import threading
import uuid

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from fieldwatch.devservices.ports import port_is_open, wait_for_port_closed

WAIT = 15.0  # seconds for any single event


class Recorder:
    """A paho-mqtt 2.x MQTT v5 client that records what happens to it, thread-safely.

    subscribe_on_connect: topic to (re)subscribe to, QoS 1, in on_connect.
    """

    def __init__(self, broker, client_id=None, subscribe_on_connect=None):
        self.broker = broker
        self.topic = subscribe_on_connect
        self.cond = threading.Condition()
        self.connects = []       # (reason_code, session_present) per CONNACK
        self.disconnects = 0
        self.subacks = 0
        self.messages = []       # (topic, payload bytes, qos)
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=client_id or "t-" + uuid.uuid4().hex[:10],
                                  protocol=MQTTProtocolVersion.MQTTv5)
        self.client.reconnect_delay_set(min_delay=0.1, max_delay=0.5)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message

    # callbacks (paho network thread)
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if self.topic is not None and not reason_code.is_failure:
            client.subscribe(self.topic, qos=1)
        with self.cond:
            self.connects.append((reason_code, flags.session_present))
            self.cond.notify_all()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        with self.cond:
            self.disconnects += 1
            self.cond.notify_all()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        with self.cond:
            self.subacks += 1
            self.cond.notify_all()

    def _on_message(self, client, userdata, message):
        with self.cond:
            self.messages.append((message.topic, message.payload, message.qos))
            self.cond.notify_all()

    # driving
    def start(self, clean_start=mqtt.MQTT_CLEAN_START_FIRST_ONLY, session_expiry=None):
        props = None
        if session_expiry is not None:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = session_expiry
        self.client.connect(self.broker.host, self.broker.port, keepalive=10,
                            clean_start=clean_start, properties=props)
        self.client.loop_start()
        return self

    def close(self):
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()

    def wait(self, predicate, what, timeout=WAIT):
        with self.cond:
            ok = self.cond.wait_for(predicate, timeout=timeout)
            state = ("connects=%s disconnects=%d subacks=%d messages=%r"
                     % (self.connects, self.disconnects, self.subacks, self.messages))
        assert ok, "timed out after %.0f s waiting for %s (%s)\n--- broker log ---\n%s" % (
            timeout, what, state, self.broker.log_tail())

    def payloads(self):
        with self.cond:
            return [m[1] for m in self.messages]


def publish_qos1(rec, topic, payload):
    info = rec.client.publish(topic, payload, qos=1)
    info.wait_for_publish(timeout=WAIT)
    assert info.is_published(), "no PUBACK for %r within %.0f s" % (payload, WAIT)


# ---- MQTT ----------------------------------------------------------------------

def test_client_reconnects_after_broker_restart(fresh_broker):
    topic = "fw/test/restart"
    sub = Recorder(fresh_broker, subscribe_on_connect=topic).start()
    pub = Recorder(fresh_broker).start()
    try:
        sub.wait(lambda: sub.subacks >= 1, "first SUBACK")
        pub.wait(lambda: len(pub.connects) >= 1, "publisher CONNACK")
        publish_qos1(pub, topic, b"before")
        sub.wait(lambda: b"before" in sub.payloads(), "message before restart")

        port = fresh_broker.port
        fresh_broker.stop()
        assert not fresh_broker.running
        sub.wait(lambda: sub.disconnects >= 1, "subscriber to notice the broker went away")
        pub.wait(lambda: pub.disconnects >= 1, "publisher to notice the broker went away")

        fresh_broker.start()
        assert fresh_broker.port == port
        # Nobody calls reconnect(): paho's loop thread does it by itself.
        sub.wait(lambda: len(sub.connects) == 2 and sub.subacks >= 2,
                 "subscriber to reconnect and resubscribe")
        pub.wait(lambda: len(pub.connects) == 2, "publisher to reconnect")
        assert all(not rc.is_failure for rc, _ in sub.connects + pub.connects)

        publish_qos1(pub, topic, b"after")
        sub.wait(lambda: b"after" in sub.payloads(), "message published after the restart")
    finally:
        sub.close()
        pub.close()


def test_persistent_session_survives_broker_restart(fresh_broker):
    topic = "fw/test/persist"
    client_id = "persist-" + uuid.uuid4().hex[:8]

    first = Recorder(fresh_broker, client_id=client_id)
    first.start(clean_start=False, session_expiry=3600)
    first.wait(lambda: len(first.connects) == 1, "CONNACK")
    first.client.subscribe(topic, qos=1)
    first.wait(lambda: first.subacks == 1, "SUBACK")
    first.close()
    first.wait(lambda: first.disconnects >= 1, "clean disconnect")

    pub = Recorder(fresh_broker).start()
    try:
        pub.wait(lambda: len(pub.connects) == 1, "publisher CONNACK")
        publish_qos1(pub, topic, b"queued-while-offline")
    finally:
        pub.close()
    assert first.payloads() == [], "the offline subscriber must not have received it yet"

    fresh_broker.stop()  # clean stop: mosquitto writes its persistence DB
    with open(fresh_broker.persistence_path, "rb") as f:
        assert len(f.read()) > 0, "no persistence DB written on stop"
    fresh_broker.start()

    # A new client object with the same id, *not* subscribing: the message can only
    # come from the session and queue the broker restored from disk.
    second = Recorder(fresh_broker, client_id=client_id)
    second.start(clean_start=False, session_expiry=3600)
    try:
        second.wait(lambda: len(second.connects) == 1, "CONNACK after restart")
        rc, session_present = second.connects[0]
        assert not rc.is_failure
        assert session_present, "broker lost the persistent session across the restart"
        second.wait(lambda: len(second.messages) >= 1, "the queued QoS 1 message")
        assert second.messages == [(topic, b"queued-while-offline", 1)]
    finally:
        second.close()


def test_broker_killed_and_restarted_comes_back_on_same_port(fresh_broker):
    host, port = fresh_broker.host, fresh_broker.port
    assert port_is_open(host, port)
    fresh_broker.kill()
    assert not fresh_broker.running
    assert wait_for_port_closed(host, port, timeout=5), "port still open after SIGKILL"

    fresh_broker.start()
    assert fresh_broker.port == port and fresh_broker.running
    assert port_is_open(host, port)
    client = Recorder(fresh_broker).start()
    try:
        client.wait(lambda: len(client.connects) == 1, "CONNACK from the restarted broker")
        assert not client.connects[0][0].is_failure
    finally:
        client.close()


def test_mqtt_url_points_at_shared_broker(broker, mqtt_url):
    assert mqtt_url == "mqtt://127.0.0.1:%d" % broker.port
    assert broker.port not in (1883, 8883)
    assert port_is_open(broker.host, broker.port)


def test_shared_broker_may_be_left_stopped(broker):
    broker.stop()
    assert not broker.running


def test_shared_broker_is_running_again(broker):
    # Runs after the test above: the autouse fixture must have restarted it.
    assert broker.running
    assert port_is_open(broker.host, broker.port)


# ---- PostgreSQL ----------------------------------------------------------------

def test_postgres_crash_keeps_committed_data(pg_cluster, fresh_db):
    assert pg_cluster.port != 5432
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute("CREATE TABLE t (id int PRIMARY KEY, v text NOT NULL)")
        conn.execute("INSERT INTO t VALUES (1, 'committed')")
    pending = psycopg.connect(fresh_db)  # a transaction left open at the crash
    pending.execute("INSERT INTO t VALUES (2, 'uncommitted')")

    pg_cluster.kill()
    assert not pg_cluster.running
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(fresh_db, connect_timeout=3).close()
    with pytest.raises(psycopg.OperationalError):
        pending.execute("SELECT 1")
    pending.close()

    pg_cluster.start()
    assert pg_cluster.running
    with psycopg.connect(fresh_db, connect_timeout=10) as conn:
        rows = conn.execute("SELECT id, v FROM t ORDER BY id").fetchall()
    assert rows == [(1, "committed")]


_seen_dbs = []


@pytest.mark.parametrize("n", [1, 2])
def test_fresh_db_is_new_and_empty(pg_cluster, fresh_db, n):
    name = fresh_db.rsplit("/", 1)[1]
    assert fresh_db == pg_cluster.url(name)
    assert name not in _seen_dbs
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        assert conn.execute("SELECT current_database()").fetchone()[0] == name
        tables = conn.execute(
            "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')").fetchall()
        assert tables == []
        conn.execute("CREATE TABLE marker (n int)")  # would show up if a db were reused
        others = [r[0] for r in conn.execute("SELECT datname FROM pg_database").fetchall()]
    for earlier in _seen_dbs:  # dropped after its test
        assert earlier not in others
    _seen_dbs.append(name)


def test_postgres_stopped_and_restarted_pool_client_reconnects(pg_cluster, fresh_db):
    """A clean stop (pg_ctl stop) and start: a pooled client, as the collector's status
    page uses, fails while the server is down and serves again after, with no restart."""
    from psycopg_pool import ConnectionPool

    with ConnectionPool(fresh_db, min_size=1, max_size=2, timeout=3,
                        check=ConnectionPool.check_connection) as pool:
        with pool.connection() as conn:
            before = conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
        pg_cluster.stop()
        assert not pg_cluster.running
        with pytest.raises(psycopg.OperationalError):
            with pool.connection() as conn:
                conn.execute("SELECT 1")
        pg_cluster.start()
        with pool.connection(timeout=30) as conn:  # the pool retries with backoff
            after = conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0]
    assert after > before  # really a new server process, reached by the same client
