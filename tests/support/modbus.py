"""A Modbus TCP meter for end-to-end tests: pymodbus's own server on a free loopback port, in an event loop of its
own thread, serving the given unit ids."""

import asyncio
import threading

from pymodbus.datastore import ModbusDeviceContext, ModbusServerContext
from pymodbus.server import ModbusTcpServer

from tests.support.ports import free_port, wait_for_port


class ModbusMeter:
    """``units``: unit id -> ModbusDeviceContext (its data blocks hold the registers the test set)."""

    def __init__(self, units: dict[int, ModbusDeviceContext]):
        self.port = free_port()
        self.context = ModbusServerContext(devices=units, single=False)
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

        async def serve():
            self.server = ModbusTcpServer(self.context, address=("127.0.0.1", self.port))
            await self.server.serve_forever()

        asyncio.run_coroutine_threadsafe(serve(), self.loop)
        wait_for_port(self.port)

    def close(self):
        asyncio.run_coroutine_threadsafe(self.server.shutdown(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
