"""The live websocket (``/ws/live/``): one per dashboard page, joined only to groups of what the user may see.

The client asks (``{"type": "subscribe", "sites": [...]}``, ``{"type": "subscribe_device", "device": uid}``,
``{"type": "subscribe_exports"}``); the server decides: requested sites are intersected with ``site_ids_for_user``, a
device is looked up through ``device_get_for_user``, and the export group is the session user's own (the frame names
no user), so asking for another site's id, device or user's exports gets nothing. Authentication is the Django
session (AuthMiddlewareStack in config/asgi.py, behind AllowedHostsOriginValidator for the origin check);
anonymous sockets are accepted only to be closed with 4401, which a browser can tell apart from a network drop.
"""

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from apps.core.json_bounded import MAX_DEPTH, JSONTooDeep, json_loads_bounded
from apps.dashboard.fanout import device_group, export_group, site_group
from apps.devices.selectors import device_get_for_user, site_ids_for_user
from apps.devices.validators import EXTERNAL_ID_RE

CLOSE_UNAUTHENTICATED = 4401
MAX_SITES = 500  # a subscription naming more sites than any organization has is not a dashboard page


@database_sync_to_async
def _permitted_sites(user, requested: set[int]) -> list[int]:
    return sorted(requested & set(site_ids_for_user(user=user)))


@database_sync_to_async
def _permitted_device(user, uid: str) -> int | None:
    device = device_get_for_user(user=user, uid=uid)
    return device.pk if device is not None else None


def _site_ids(value) -> set[int] | None:
    """Site ids as integers or strings of digits; None for anything else. ``int()`` is not asked to judge: it takes
    ``true`` (1) and ``1.9`` (1), and raises OverflowError on ``1e400`` (infinity), which closed the socket."""
    if not isinstance(value, list) or len(value) > MAX_SITES:
        return None
    ids = set()
    for item in value:
        if isinstance(item, str) and item.isdigit() and len(item) <= 19:
            ids.add(int(item))
        elif isinstance(item, int) and not isinstance(item, bool):
            ids.add(item)
        else:
            return None
    return ids


_NOT_JSON = object()
_TOO_DEEP = object()


class LiveConsumer(AsyncJsonWebsocketConsumer):
    """Forwards ``live.message`` events of the joined ``site.<id>`` / ``device.<id>`` / ``exports.<user id>``
    groups: each is one frame holding a message object or an array of them (see apps.dashboard.fanout)."""

    async def connect(self):
        user = self.scope.get("user")
        self.joined: set[str] = set()
        await self.accept()
        if user is None or not user.is_authenticated:
            await self.close(code=CLOSE_UNAUTHENTICATED)

    async def disconnect(self, code):
        for group in getattr(self, "joined", ()):
            await self.channel_layer.group_discard(group, self.channel_name)
        self.joined = set()

    async def receive(self, text_data=None, bytes_data=None, **kwargs):
        # Channels raises on a binary frame, which drops the connection; it is answered like any unreadable frame.
        await self.receive_json(await self.decode_json(text_data) if text_data else _NOT_JSON, **kwargs)

    @classmethod
    async def decode_json(cls, text_data):
        # A frame that is not JSON, or nests too deeply, gets an error answer, not an exception (RecursionError for
        # a deep one) that drops the connection.
        try:
            return json_loads_bounded(text_data)
        except JSONTooDeep:
            return _TOO_DEEP
        except (TypeError, ValueError):
            return _NOT_JSON

    async def receive_json(self, content, **kwargs):
        if content is _NOT_JSON:
            await self.send_json({"type": "error", "error": "frames must be JSON objects"})
            return
        if content is _TOO_DEEP:
            await self.send_json({"type": "error", "error": f"frames may nest at most {MAX_DEPTH} levels"})
            return
        kind = content.get("type") if isinstance(content, dict) else None
        if kind == "subscribe":
            await self._subscribe_sites(content.get("sites"))
        elif kind == "subscribe_device":
            await self._subscribe_device(content.get("device"))
        elif kind == "subscribe_exports":
            await self._subscribe_exports()
        else:
            await self.send_json({"type": "error", "error": "unknown message type"})

    async def _subscribe_sites(self, value):
        requested = _site_ids(value)
        if requested is None:
            await self.send_json({"type": "error", "error": "sites must be a list of site ids"})
            return
        sites = await _permitted_sites(self.scope["user"], requested)
        # A subscribe replaces the previous site subscription (the page's site switcher changed).
        wanted = {site_group(site_id) for site_id in sites}
        for group in {g for g in self.joined if g.startswith("site.")} - wanted:
            await self.channel_layer.group_discard(group, self.channel_name)
            self.joined.discard(group)
        for group in wanted - self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined.add(group)
        await self.send_json({"type": "subscribed", "sites": sites})

    async def _subscribe_device(self, uid):
        # A well-formed uid only: a NUL in it made the lookup raise (PostgreSQL refuses NUL) and closed the socket.
        well_formed = isinstance(uid, str) and EXTERNAL_ID_RE.fullmatch(uid)
        device_id = await _permitted_device(self.scope["user"], uid) if well_formed else None
        if device_id is None:
            await self.send_json({"type": "error", "error": "no such device"})
            return
        group = device_group(device_id)
        if group not in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined.add(group)
        await self.send_json({"type": "subscribed_device", "device": uid})

    async def _subscribe_exports(self):
        group = export_group(self.scope["user"].pk)
        if group not in self.joined:
            await self.channel_layer.group_add(group, self.channel_name)
            self.joined.add(group)
        await self.send_json({"type": "subscribed_exports"})

    async def live_message(self, event):
        """Forward a fan-out frame (JSON text, encoded once by the publisher for every socket of the group)."""
        site_group = event.get("site_group")
        if site_group is not None and site_group in self.joined:
            return  # a device-group copy of what this socket receives through the device's site group
        await self.send(text_data=event["text"])
