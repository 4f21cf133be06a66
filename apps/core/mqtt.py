"""The broker as every Fieldwatch process reaches it: one reading of ``MQTT_URL``, one way to make a client.

``mqtt://user:password@host:port`` (plain, port 1883 by default) or ``mqtts://`` / ``ssl://`` (TLS with the
system's CA bundle, port 8883 by default). The listener, the simulator and the doctor's probe all connect through
``mqtt_client``, so a credential or TLS setting means the same thing to each of them. The broker admits no
anonymous client: the listener and the doctor log in as the listener (``listener_broker_address``), the simulator
as each device and gateway it plays.
"""

import dataclasses
from dataclasses import dataclass
from urllib.parse import unquote, urlparse

import paho.mqtt.client as mqtt
from django.conf import settings

TLS_SCHEMES = frozenset({"mqtts", "ssl"})


@dataclass(frozen=True, slots=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None

    def __str__(self) -> str:  # for logs and messages: never the password
        return f"{'mqtts' if self.tls else 'mqtt'}://{self.host}:{self.port}"


def broker_address(url: str | None = None) -> BrokerAddress:
    """``url`` (default ``settings.MQTT_URL``) as host, port, TLS flag and credentials (percent-decoded)."""
    parsed = urlparse(url if url is not None else settings.MQTT_URL)
    tls = parsed.scheme in TLS_SCHEMES
    return BrokerAddress(
        host=parsed.hostname or "127.0.0.1",
        port=parsed.port or (8883 if tls else 1883),
        tls=tls,
        username=unquote(parsed.username) if parsed.username else None,
        password=unquote(parsed.password) if parsed.password is not None else None,
    )


def listener_broker_address(url: str | None = None) -> BrokerAddress:
    """``broker_address(url)`` with the listener's login (``MQTT_LISTENER_USERNAME``/``_PASSWORD``) unless the URL
    carries credentials of its own."""
    address = broker_address(url)
    if address.username or not settings.MQTT_LISTENER_USERNAME:
        return address
    return dataclasses.replace(
        address, username=settings.MQTT_LISTENER_USERNAME, password=settings.MQTT_LISTENER_PASSWORD
    )


def mqtt_client(address: BrokerAddress, **client_options) -> mqtt.Client:
    """A paho MQTT 5 client (callback API 2) with ``address``'s credentials and TLS applied; not yet connected."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5, **client_options)
    if address.username:
        client.username_pw_set(address.username, address.password)
    if address.tls:
        client.tls_set()
    return client
