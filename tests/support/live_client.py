"""A real websocket client of the dashboard's live endpoint (``/ws/live/``, apps/dashboard/consumers.py), as the
page's live.js uses it: the session cookie, the page's origin, ``subscribe`` to sites, and a reconnect with backoff
(live.js: 1 s doubling to 10 s) whenever the socket closes. Runs in a thread; every message is kept with its arrival
time and the connection it came on."""

import json
import threading
import time

from django.conf import settings
from django.test import Client
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect


def session_cookie(user) -> str:
    """A logged-in session of ``user``, stored in the (committed) database as the login view would."""
    client = Client()
    client.force_login(user)
    return f"{settings.SESSION_COOKIE_NAME}={client.cookies[settings.SESSION_COOKIE_NAME].value}"


class LiveClient(threading.Thread):
    def __init__(self, base_url: str, cookie: str, sites: list[int], *, reconnect_max: float = 10.0):
        super().__init__(daemon=True)
        self.url = base_url.replace("http://", "ws://") + "/ws/live/"
        self.origin = base_url
        self.cookie = cookie
        self.sites = sites
        self.reconnect_max = reconnect_max
        self.messages: list[tuple[float, int, dict]] = []  # (monotonic arrival, connection number, message)
        self.connections = 0
        self.closes: list[tuple[float, str]] = []
        self.subscribed = threading.Event()
        self._stopping = threading.Event()
        self._socket = None

    def run(self) -> None:
        delay = 1.0
        while not self._stopping.is_set():
            try:
                with connect(
                    self.url, origin=self.origin, additional_headers={"Cookie": self.cookie}, open_timeout=10
                ) as socket:
                    self._socket = socket
                    self.connections += 1
                    socket.send(json.dumps({"type": "subscribe", "sites": self.sites}))
                    delay = 1.0
                    for raw in socket:
                        frame = json.loads(raw)
                        for message in frame if isinstance(frame, list) else [frame]:
                            if message.get("type") == "subscribed":
                                self.subscribed.set()
                            self.messages.append((time.monotonic(), self.connections, message))
            except (OSError, ConnectionClosed, TimeoutError) as error:
                self.closes.append((time.monotonic(), repr(error)))
            else:
                self.closes.append((time.monotonic(), "closed by the server"))
            self._socket = None
            if self._stopping.wait(delay):
                return
            delay = min(delay * 2, self.reconnect_max)

    def latest_after(self, since: float, metric: str | None = None) -> list[dict]:
        """``latest`` messages that arrived after ``since`` (monotonic)."""
        return [
            message
            for at, _, message in list(self.messages)
            if at > since and message.get("type") == "latest" and (metric is None or metric in message["values"])
        ]

    def stop(self) -> None:
        self._stopping.set()
        socket = self._socket
        if socket is not None:
            socket.close()
        self.join(10)
