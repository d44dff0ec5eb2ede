"""Broker connection settings shared by ``mqtt_sink`` and ``mqtt_source`` (aiomqtt).

:class:`MqttConnectionConfig` holds the keys both nodes take; :func:`client_kwargs` turns them
into ``aiomqtt.Client`` arguments (TLS context, credentials from the environment, protocol
version); :class:`Backoff` is the capped exponential reconnect delay; :func:`describe_error`
turns a failed connect into one clear sentence.
"""

from __future__ import annotations

import os
import random
import ssl
from typing import Any, Literal

import aiomqtt
from aiomqtt.exceptions import MqttConnectError
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import Field, field_validator

from les02_flow.node import NodeConfig, NodeStartError

from .codec import BrokerUrl, parse_url

__all__ = ["Backoff", "MqttConnectionConfig", "client_kwargs", "describe_error", "is_refused"]

Protocol = Literal["auto", "5", "3.1.1"]


class MqttConnectionConfig(NodeConfig):
    """Keys common to ``mqtt_sink`` and ``mqtt_source``."""

    url: str = Field(
        default="mqtt://127.0.0.1:1883",
        description="Broker: mqtt://host[:port] (default port 1883) or mqtts://host[:port] "
        "(TLS, default port 8883). No credentials in the URL.",
    )
    client_id: str = Field(
        default="",
        max_length=128,
        description="MQTT client id; unique per broker. Empty = derived from site, source and "
        "node id (see the node's documentation).",
    )
    protocol: Protocol = Field(
        default="auto",
        description="MQTT version: '5', '3.1.1', or 'auto' (5, falling back to 3.1.1 when the "
        "broker refuses 5).",
    )
    username: str | None = Field(default=None, description="User name for the broker.")
    password_env: str | None = Field(
        default=None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of the environment variable that holds the password (the secret "
        "itself never goes into the flow file).",
    )
    ca_file: str | None = Field(
        default=None,
        description="PEM file of the CA(s) that signed the broker's certificate (mqtts://); "
        "unset = the system's trust store.",
    )
    cert_file: str | None = Field(
        default=None, description="PEM client certificate for mutual TLS (with key_file)."
    )
    key_file: str | None = Field(default=None, description="PEM private key of cert_file.")
    keepalive: int = Field(
        default=30, ge=5, le=65535, description="Seconds between keep-alive pings."
    )
    timeout: float = Field(
        default=10.0, gt=0, description="Seconds a connect or subscribe may take."
    )
    backoff_min: float = Field(
        default=0.5, gt=0, description="First reconnect delay in seconds (doubles per failure)."
    )
    backoff_max: float = Field(
        default=30.0, gt=0, description="Longest reconnect delay in seconds."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parse_url(value)
        return value

    def broker(self) -> BrokerUrl:
        return parse_url(self.url)


def _password(cfg: MqttConnectionConfig, who: str) -> str | None:
    if cfg.password_env is None:
        return None
    value = os.environ.get(cfg.password_env)
    if value is None:
        raise NodeStartError(
            f"{who}: environment variable {cfg.password_env} (password_env) is not set"
        )
    return value


def _tls_context(cfg: MqttConnectionConfig, who: str) -> ssl.SSLContext | None:
    url = cfg.broker()
    if not url.tls:
        if cfg.ca_file or cfg.cert_file or cfg.key_file:
            raise NodeStartError(
                f"{who}: ca_file/cert_file/key_file need an mqtts:// url (url is {cfg.url})"
            )
        return None
    if bool(cfg.cert_file) != bool(cfg.key_file):
        raise NodeStartError(f"{who}: cert_file and key_file go together")
    try:
        ctx = ssl.create_default_context(cafile=cfg.ca_file)
        if cfg.cert_file and cfg.key_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise NodeStartError(f"{who}: TLS setup failed: {exc}") from exc
    return ctx


def client_kwargs(cfg: MqttConnectionConfig, who: str, client_id: str, v5: bool) -> dict[str, Any]:
    """Arguments for ``aiomqtt.Client`` (raises :class:`NodeStartError` for bad settings,
    starting with ``who``: the node's log prefix, ``TYPE 'ID'``)."""
    url = cfg.broker()
    kw: dict[str, Any] = {
        "hostname": url.host,
        "port": url.port,
        "identifier": client_id,
        "protocol": aiomqtt.ProtocolVersion.V5 if v5 else aiomqtt.ProtocolVersion.V311,
        "keepalive": cfg.keepalive,
        "timeout": cfg.timeout,
        "tls_context": _tls_context(cfg, who),
    }
    if cfg.username:  # empty (e.g. an unset ${VAR:-}) = anonymous
        kw["username"] = cfg.username
        kw["password"] = _password(cfg, who)
    return kw


def session_properties(expiry: int) -> Properties:
    """CONNECT properties of a v5 persistent session lasting ``expiry`` seconds."""
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = expiry
    return props


def is_refused(exc: BaseException) -> str | None:
    """``"auth"`` for refused credentials, ``"protocol"`` for an unsupported MQTT version,
    ``None`` otherwise."""
    if isinstance(exc, MqttConnectError):  # a CONNACK that refused (not a lost connection)
        text = str(exc).lower()
        rc = exc.rc
        value = getattr(rc, "value", rc)
        if value in (4, 5, 134, 135) or "not authori" in text or "bad user" in text:
            return "auth"
        if value in (1, 132) or "unsupported protocol" in text or "protocol version" in text:
            return "protocol"
    return None


def describe_error(exc: BaseException, cfg: MqttConnectionConfig) -> str:
    """One sentence for the log: where and why a connection failed."""
    kind = is_refused(exc)
    where = f"broker {cfg.broker()}"
    if kind == "auth":
        who = f"user {cfg.username!r}" if cfg.username else "anonymous client"
        return (
            f"{where} refused the credentials of {who} ({exc}); check username and the "
            f"password in ${cfg.password_env}"
            if cfg.password_env
            else f"{where} refused the credentials of {who} ({exc})"
        )
    if isinstance(exc, ssl.SSLError) or "certificate" in str(exc).lower():
        return f"{where}: TLS failed ({exc}); check ca_file and the broker's certificate"
    return f"{where}: {type(exc).__name__}: {exc}"


class Backoff:
    """Capped exponential delay with +-20 % jitter.

    >>> b = Backoff(0.5, 4.0, rng=lambda: 0.5)
    >>> [b.next() for _ in range(5)]
    [0.5, 1.0, 2.0, 4.0, 4.0]
    >>> b.reset(); b.next()
    0.5
    """

    def __init__(self, low: float, high: float, rng: Any = random.random) -> None:
        self.low, self.high = low, max(low, high)
        self._delay = low
        self._rng = rng

    def next(self) -> float:
        d = self._delay
        self._delay = min(self.high, self._delay * 2)
        return round(d * (0.8 + 0.4 * float(self._rng())), 6)

    def reset(self) -> None:
        self._delay = self.low
