"""The one MQTT connection: paho-mqtt 2.x, status/last will, re-subscription, publish tickets.

paho callbacks run on paho's network thread. They only update state under a
short lock, enqueue inbound messages and resolve tickets; subscription
handlers run on this link's own dispatch thread, so a slow handler never
stalls keepalives or acknowledgements. The link's lock is never held while
calling into paho (paho holds its own locks while running callbacks).
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from agent.backoff import Backoff
from agent.errors import ConfigError
from agent.logs import event
from agent.manifest.config import MqttConfig
from agent.mqtt.credentials import read_password
from agent.mqtt.payloads import STATUS_OFFLINE, STATUS_ONLINE, STATUS_SCHEMA, STATUS_STOPPED
from agent.mqtt.topics import Topics

log = logging.getLogger(__name__)

ACKED = "acked"  # PUBACK/PUBCOMP with a success code; for QoS 0: written to the socket
REJECTED = "rejected"  # refused for good (MQTT v5 reason code): sending it again would be refused again
REFUSED = "refused"  # refused for now (MQTT v5 reason code, e.g. quota exceeded): worth sending again later
LOST = "lost"  # QoS 0 not written before the connection dropped, or the link was closed first

# PUBACK/PUBREC reason codes that depend on the message, not on the broker's current load
_PERMANENT = frozenset({
    0x87,  # not authorized
    0x90,  # topic name invalid
    0x95,  # packet too large
    0x99,  # payload format invalid
})


@dataclass(frozen=True)
class MessageProps:
    """MQTT v5 publish properties the agent uses; ignored on MQTT 3.1.1."""

    schema: Optional[str] = None  # sent as user property "schema"
    expiry_s: Optional[int] = None  # MessageExpiryInterval
    content_type: Optional[str] = None


@dataclass(frozen=True)
class InboundMessage:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    user_properties: Dict[str, str] = field(default_factory=dict)


Handler = Callable[[InboundMessage], None]
ConnectionListener = Callable[[bool], None]


class PublishTicket:
    """One publish: ``mid``, and when/how it ended (``outcome`` is ACKED, REJECTED, REFUSED or LOST)."""

    def __init__(self, mid: int, qos: int, epoch: int) -> None:
        self.mid = mid
        self.qos = qos
        self.epoch = epoch  # the link's connection count when published
        self.outcome: Optional[str] = None
        self.reason = ""
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks: List[Callable[[PublishTicket], None]] = []

    def done(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self._event.wait(timeout)

    def add_done_callback(self, fn: Callable[[PublishTicket], None]) -> None:
        """``fn(ticket)`` once the ticket is done, possibly on paho's network thread: it must not block."""
        with self._lock:
            if self.outcome is None:
                self._callbacks.append(fn)
                return
        fn(self)

    def resolve(self, outcome: str, reason: str = "") -> None:
        """Called by the link; the first resolution wins."""
        with self._lock:
            if self.outcome is not None:
                return
            self.outcome, self.reason = outcome, reason
            callbacks, self._callbacks = self._callbacks, []
        self._event.set()
        for fn in callbacks:
            fn(self)


@dataclass(frozen=True)
class LinkStats:
    connected: bool
    connects: int
    disconnects: int
    last_error: str
    inbound_dropped: int
    protocol: str


_STOP = object()


class MqttLink:
    """``start()`` returns at once; the link connects (and reconnects with backoff) in the background."""

    def __init__(
        self,
        config: MqttConfig,
        topics: Topics,
        credentials_dir: Optional[Path] = None,
        *,
        base_dir: Optional[Path] = None,
        max_inflight: int = 100,
        assumed_receive_maximum: int = 20,
        inbound_queue: int = 1000,
    ) -> None:
        self.config = config
        self.topics = topics
        self._v5 = config.protocol == "5"
        # QoS>0 publishes paho keeps unacknowledged on the wire; it queues the rest in memory
        self._max_inflight = max_inflight
        # MQTT 3.1.1 cannot tell us how many unacknowledged QoS>0 publishes the broker accepts; 20 is
        # Mosquitto's default (max_inflight_messages). MQTT v5 brokers send it in CONNACK.
        self._receive_maximum = assumed_receive_maximum
        self._lock = threading.Lock()
        self._connected = False
        self._closing = False
        self._stopped = False
        self._epoch = 0
        self._connects = 0
        self._disconnects = 0
        self._outage_logged = False
        self._last_error = ""
        self._inbound_dropped = 0
        self._pending: Dict[int, PublishTicket] = {}
        # on_publish can arrive before publish() returns the mid; such outcomes wait here for their ticket
        self._early: Dict[int, Tuple[str, str]] = {}
        self._subs: Dict[str, Tuple[int, Handler]] = {}
        self._sub_mids: Dict[int, List[str]] = {}
        self._listeners: List[ConnectionListener] = []
        self._props_cache: Dict[MessageProps, Properties] = {}
        # paho doubles its reconnect delay without jitter, so a fleet reconnects in lockstep after a broker
        # restart; before each of paho's waits we set both its bounds to our own jittered delay instead.
        self._backoff = Backoff(config.reconnect_min_s, max(config.reconnect_min_s, config.reconnect_max_s),
                                full_jitter=True)
        self._up = threading.Event()
        self._inbound: queue.Queue[Any] = queue.Queue(maxsize=inbound_queue)
        self._dispatcher = threading.Thread(target=self._dispatch, name="mqtt-dispatch", daemon=True)
        self._client = self._build_client(credentials_dir, base_dir or Path.cwd())

    # -- setup -------------------------------------------------------------------------------------------------

    def _build_client(self, credentials_dir: Optional[Path], base_dir: Path) -> mqtt.Client:
        cfg = self.config
        client_id = cfg.client_id or f"edge-agent-{self.topics.device_id}"
        if self._v5:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        else:
            client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv311,
                                 clean_session=True)
        # a bug in a callback must be logged, not kill the network thread
        client.suppress_exceptions = True
        client.on_log = self._on_log
        self._set_reconnect_delay(client)
        client.max_inflight_messages_set(self._max_inflight)
        if cfg.username is not None:
            password = read_password(cfg.password_file, credentials_dir, base_dir) if cfg.password_file else None
            client.username_pw_set(cfg.username, password)
        elif cfg.password_file:
            raise ConfigError("mqtt.password_file is set but mqtt.username is not: set mqtt.username")
        if cfg.tls is not None:
            self._configure_tls(client, base_dir)
        client.will_set(self.topics.status, STATUS_OFFLINE, qos=1, retain=True,
                        properties=self._will_properties())
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        return client

    def _configure_tls(self, client: mqtt.Client, base_dir: Path) -> None:
        assert self.config.tls is not None
        client.tls_set_context(tls_context(self.config, base_dir))
        client.tls_insecure_set(self.config.tls.insecure)

    def _will_properties(self) -> Optional[Properties]:
        if not self._v5:
            return None
        props = Properties(PacketTypes.WILLMESSAGE)
        props.UserProperty = ("schema", STATUS_SCHEMA)
        return props

    # -- public API --------------------------------------------------------------------------------------------

    def start(self) -> None:
        """Connect in the background; works with the broker down (it keeps retrying with backoff)."""
        self._dispatcher.start()
        kwargs: Dict[str, Any] = {"clean_start": True} if self._v5 else {}
        self._client.connect_async(self.config.host, self.config.port, keepalive=self.config.keepalive, **kwargs)
        self._client.loop_start()
        event(log, logging.INFO, "mqtt.starting", host=self.config.host, port=self.config.port,
              protocol=self.config.protocol, tls=self.config.tls is not None)

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def receive_maximum(self) -> int:
        """How many unacknowledged QoS>0 publishes the broker accepts at once. Over it, Mosquitto 2.0 answers
        "Quota exceeded" and closes the connection; after a reconnect paho resends ALL unacknowledged messages
        at once, ignoring its own in-flight limit, so that repeats. Whoever keeps many messages in flight (the
        result publisher) must stay below it."""
        return self._receive_maximum

    @property
    def epoch(self) -> int:
        """Successful connections so far; a ticket from an older epoch was published on an earlier connection."""
        return self._epoch

    def wait_connected(self, timeout: Optional[float] = None) -> bool:
        return self._up.wait(timeout)

    def add_listener(self, fn: ConnectionListener) -> None:
        """``fn(connected)`` on every connect and disconnect, on paho's network thread: it must not block."""
        with self._lock:
            self._listeners.append(fn)

    def publish(self, topic: str, payload: Union[bytes, str], qos: int = 0, retain: bool = False,
                props: Optional[MessageProps] = None) -> PublishTicket:
        """Hand one message to paho. QoS 1/2 published while disconnected are kept by paho (in memory) and sent
        after reconnecting; QoS 0 ones are LOST at once."""
        epoch = self._epoch
        info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=self._properties(props))
        ticket = PublishTicket(info.mid, qos, epoch)
        queued = info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (qos > 0 and info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN)
        outcome: Optional[Tuple[str, str]] = None
        with self._lock:
            if self._stopped:
                outcome = (LOST, "link closed")
            elif not queued:
                outcome = (LOST, mqtt.error_string(info.rc))
            elif info.mid in self._early:
                outcome = self._early.pop(info.mid)
            else:
                self._pending[info.mid] = ticket
        if outcome is not None:
            ticket.resolve(*outcome)
        return ticket

    def subscribe(self, topic_filter: str, handler: Handler, qos: int = 1) -> None:
        """Route messages matching ``topic_filter`` to ``handler`` (on the dispatch thread), now and after every
        reconnect."""
        with self._lock:
            self._subs[topic_filter] = (qos, handler)
            connected = self._connected
        if connected:
            self._send_subscribe([(topic_filter, qos)])

    def stats(self) -> LinkStats:
        with self._lock:
            return LinkStats(self._connected, self._connects, self._disconnects, self._last_error,
                             self._inbound_dropped, self.config.protocol)

    def close(self, timeout: float = 5.0) -> None:
        """Publish retained ``stopped`` (when connected), disconnect cleanly (no last will), stop the threads."""
        with self._lock:
            if self._closing:
                return
            self._closing = True
            connected = self._connected
        if connected:
            ticket = self.publish(self.topics.status, STATUS_STOPPED, qos=1, retain=True,
                                  props=MessageProps(schema=STATUS_SCHEMA))
            if not ticket.wait(timeout):
                event(log, logging.WARNING, "mqtt.stopped_not_acknowledged", timeout_s=timeout)
        self._client.disconnect()
        self._client.loop_stop()
        with self._lock:
            self._stopped = True
            abandoned = list(self._pending.values())
            self._pending.clear()
        for ticket in abandoned:
            ticket.resolve(LOST, "link closed")
        if self._dispatcher.is_alive():
            self._inbound.put(_STOP)
            self._dispatcher.join(timeout)
        event(log, logging.INFO, "mqtt.closed", abandoned=len(abandoned))

    # -- paho callbacks (network thread: never block) ----------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: ReasonCode,
                    properties: Optional[Properties]) -> None:
        if reason_code.is_failure:
            self._connect_failed(f"broker refused the connection: {reason_code}", "mqtt.refused",
                                 username=self.config.username)
            return
        with self._lock:
            if self._closing:
                return
            if self._v5:
                self._receive_maximum = int(getattr(properties, "ReceiveMaximum", 65535))
            self._connected = True
            self._backoff.reset()
            self._epoch += 1
            self._connects += 1
            self._outage_logged = False
            subs = [(topic, qos) for topic, (qos, _) in self._subs.items()]
            listeners = list(self._listeners)
        self._up.set()
        self.publish(self.topics.status, STATUS_ONLINE, qos=1, retain=True, props=MessageProps(schema=STATUS_SCHEMA))
        if subs:
            self._send_subscribe(subs)
        event(log, logging.INFO, "mqtt.connected", host=self.config.host, port=self.config.port,
              connects=self._connects, subscriptions=len(subs))
        for fn in listeners:
            fn(True)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        self._connect_failed(f"cannot reach broker {self.config.host}:{self.config.port}", "mqtt.unreachable")

    def _connect_failed(self, error: str, name: str, **fields: Any) -> None:
        self._set_reconnect_delay(self._client)
        with self._lock:
            self._last_error = error
            first = not self._outage_logged
            self._outage_logged = True
        # once per outage at warning level; the retries themselves are routine
        event(log, logging.WARNING if first else logging.DEBUG, name, error=error, host=self.config.host,
              port=self.config.port, **fields)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason_code: ReasonCode,
                       properties: Optional[Properties]) -> None:
        self._set_reconnect_delay(client)
        with self._lock:
            was_connected = self._connected
            self._connected = False
            closing = self._closing
            if was_connected:
                self._disconnects += 1
                if not closing:
                    self._last_error = f"disconnected: {reason_code}"
            # paho keeps QoS>0 messages and resends them after reconnecting; QoS 0 ones are gone
            lost = [mid for mid, t in self._pending.items() if t.qos == 0]
            tickets = [self._pending.pop(mid) for mid in lost]
            listeners = list(self._listeners)
        self._up.clear()
        for ticket in tickets:
            ticket.resolve(LOST, "connection lost before the message was written")
        if was_connected:
            event(log, logging.DEBUG if closing else logging.WARNING, "mqtt.disconnected", reason=str(reason_code),
                  qos0_lost=len(tickets))
            for fn in listeners:
                fn(False)

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason_code: ReasonCode,
                    properties: Optional[Properties]) -> None:
        if not reason_code.is_failure:
            outcome = (ACKED, str(reason_code))
        else:
            outcome = (REJECTED if reason_code.value in _PERMANENT else REFUSED, str(reason_code))
        with self._lock:
            ticket = self._pending.pop(mid, None)
            if ticket is None:
                self._early[mid] = outcome
        if ticket is not None:
            ticket.resolve(*outcome)

    def _on_log(self, client: mqtt.Client, userdata: Any, level: int, text: str) -> None:
        # paho 2.2 logs "Client is not connected" at ERROR on every reconnect attempt; mqtt.unreachable covers it
        if level == mqtt.MQTT_LOG_ERR and not text.startswith("Client is not connected"):
            event(log, logging.ERROR, "mqtt.client_error", detail=text)
        elif log.isEnabledFor(logging.DEBUG):
            event(log, logging.DEBUG, "mqtt.paho", detail=text)

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        user = dict(getattr(message.properties, "UserProperty", None) or [])
        inbound = InboundMessage(message.topic, bytes(message.payload), message.qos, bool(message.retain), user)
        try:
            self._inbound.put_nowait(inbound)
        except queue.Full:
            with self._lock:
                self._inbound_dropped += 1
            event(log, logging.WARNING, "mqtt.inbound_dropped", topic=message.topic,
                  queue_size=self._inbound.maxsize)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reason_codes: List[ReasonCode],
                      properties: Optional[Properties]) -> None:
        with self._lock:
            topics = self._sub_mids.pop(mid, [])
        refused = [(t, str(rc)) for t, rc in zip(topics or ["?"] * len(reason_codes), reason_codes)
                   if rc.is_failure]
        if refused:
            with self._lock:
                self._last_error = f"subscription refused: {refused}"
            event(log, logging.WARNING, "mqtt.subscribe_refused", refused=refused,
                  hint="check the broker ACL for this device's username")

    # -- internals ---------------------------------------------------------------------------------------------

    def _set_reconnect_delay(self, client: mqtt.Client) -> None:
        """paho waits ``min_delay`` before the next attempt after a reset; this sets that wait (network thread)."""
        delay = self._backoff.next_delay()
        # paho annotates int but waits on floats: sub-second delays are honoured
        client.reconnect_delay_set(delay, delay)  # type: ignore[arg-type]

    def _send_subscribe(self, subs: List[Tuple[str, int]]) -> None:
        request: Any = [(t, SubscribeOptions(qos=q)) for t, q in subs] if self._v5 else subs
        rc, mid = self._client.subscribe(request)
        if rc == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
            with self._lock:
                self._sub_mids[mid] = [t for t, _ in subs]

    def _properties(self, props: Optional[MessageProps]) -> Optional[Properties]:
        if props is None or not self._v5:
            return None
        cached = self._props_cache.get(props)
        if cached is not None:
            return cached
        out = Properties(PacketTypes.PUBLISH)
        if props.schema:
            out.UserProperty = ("schema", props.schema)
        if props.expiry_s:
            out.MessageExpiryInterval = props.expiry_s
        if props.content_type:
            out.ContentType = props.content_type
        self._props_cache[props] = out
        return out

    def _dispatch(self) -> None:
        while True:
            item = self._inbound.get()
            if item is _STOP:
                return
            with self._lock:
                handlers = [h for topic, (_, h) in self._subs.items() if mqtt.topic_matches_sub(topic, item.topic)]
            for handler in handlers:
                try:
                    handler(item)
                except Exception:
                    log.exception("mqtt.handler_failed", extra={"topic": item.topic})


def tls_context(config: MqttConfig, base_dir: Path) -> ssl.SSLContext:
    """The TLS context the link connects with (``mqtt.tls``; relative paths start at ``base_dir``), which
    verifies the broker's certificate. ``ConfigError`` naming the field for a missing or unloadable file;
    ``edge-agent validate`` calls this too."""
    tls = config.tls
    assert tls is not None
    files: Dict[str, Optional[str]] = {}
    for key, value in (("ca_file", tls.ca_file), ("cert_file", tls.cert_file), ("key_file", tls.key_file)):
        if value is None:
            files[key] = None
            continue
        path = Path(value) if Path(value).is_absolute() else base_dir / value
        if not path.is_file():
            raise ConfigError(f"mqtt.tls.{key}: {path} does not exist or is not a file: fix the path in config.yaml")
        files[key] = str(path)
    if files["key_file"] and not files["cert_file"]:
        raise ConfigError("mqtt.tls.key_file is set without mqtt.tls.cert_file: give both, or neither")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if files["ca_file"]:
            context.load_verify_locations(files["ca_file"])
        else:
            context.load_default_certs()
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(f"mqtt.tls.ca_file: cannot load {files['ca_file'] or 'the system CA certificates'} "
                          f"({exc}): give a PEM file of CA certificates") from None
    if files["cert_file"]:
        try:
            context.load_cert_chain(files["cert_file"], files["key_file"])
        except (ssl.SSLError, OSError, ValueError) as exc:
            raise ConfigError(f"mqtt.tls.cert_file: cannot load {files['cert_file']} ({exc}): check that the "
                              "certificate and key are PEM files and that the key matches the certificate") from None
    return context
