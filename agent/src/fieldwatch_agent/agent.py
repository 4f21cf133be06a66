"""The running agent: the buffer, one poller per Modbus connection, the pass-through sources, the heartbeat and the
forwarder, started together and stopped together on SIGTERM/SIGINT.

Nothing here needs a clean stop to keep its promise: every reading is in the buffer before anyone sends it, and
leaves it only on the platform's acknowledgement, so a kill -9 or a power cut at any point loses nothing buffered.
A clean stop only closes connections politely.
"""

import logging
import signal
import threading
import time

from fieldwatch_agent.buffer import Buffer
from fieldwatch_agent.config import (
    AgentConfig,
    HttpPassThroughConfig,
    ModbusRtuSourceConfig,
    ModbusTcpSourceConfig,
    MqttPassThroughConfig,
)
from fieldwatch_agent.forwarder import Forwarder, batch_limit_for
from fieldwatch_agent.health import Health, Heartbeat
from fieldwatch_agent.modbus import ModbusPoller
from fieldwatch_agent.passthrough import HttpPassThrough, MqttPassThrough
from fieldwatch_agent.sinks import make_sink

log = logging.getLogger(__name__)


def open_buffer(config: AgentConfig) -> Buffer:
    settings = config.buffer
    return Buffer(
        settings.path,
        max_bytes=settings.max_bytes,
        max_readings=settings.max_readings,
        synchronous=settings.synchronous,
    )


class Agent:
    def __init__(self, config: AgentConfig):
        self.config = config
        self.stop_event = threading.Event()  # the sources and the heartbeat
        self.forwarder_stop = threading.Event()  # set after them: the last polls still get a chance to go out
        self.buffer = open_buffer(config)
        self.health = Health()
        self.sink = make_sink(config.sink)
        maps = config.register_maps()
        self.threads: list[threading.Thread] = []
        self.services: list[MqttPassThrough | HttpPassThrough] = []
        for source in config.sources:
            if isinstance(source, ModbusTcpSourceConfig | ModbusRtuSourceConfig):
                self.threads.append(ModbusPoller(source, maps, self.buffer, self.health, self.stop_event))
            elif isinstance(source, MqttPassThroughConfig):
                self.services.append(MqttPassThrough(source, self.buffer))
            elif isinstance(source, HttpPassThroughConfig):
                self.services.append(HttpPassThrough(source, self.buffer))
        if config.heartbeat is not None:
            self.threads.append(Heartbeat(self.buffer, self.health, config.heartbeat, self.stop_event))
        self.forwarder = Forwarder(
            self.buffer,
            self.sink,
            config.forwarding,
            self.health,
            self.forwarder_stop,
            batch_limit=batch_limit_for(self.sink),
        )

    def start(self) -> None:
        stats = self.buffer.stats()
        log.info(
            "buffer %s: %d readings waiting (oldest %.0f s), %d dropped so far",
            self.config.buffer.path,
            stats.depth,
            stats.oldest_age_s(),
            stats.dropped_total,
        )
        for service in self.services:
            service.start()
        for thread in self.threads:
            thread.start()
        self.forwarder.start()
        log.info(
            "agent running: %d pollers, %d pass-through sources, sink %s",
            len(self.threads) - (self.config.heartbeat is not None),
            len(self.services),
            self.config.sink.kind,
        )

    # On a clean stop, how long the forwarder may go on sending what the last polls buffered. Whatever it cannot send
    # in that time stays in the buffer for the next start: this is politeness, not what keeps readings safe.
    FINAL_DRAIN_S = 3.0

    def stop(self) -> None:
        self.stop_event.set()
        for service in self.services:
            service.stop()
        for thread in self.threads:
            thread.join(timeout=10)
        deadline = time.monotonic() + self.FINAL_DRAIN_S
        while self.forwarder.is_alive() and time.monotonic() < deadline and self.forwarder.healthy:
            if not self.buffer.oldest(1):
                break
            time.sleep(0.05)
        self.forwarder_stop.set()
        self.forwarder.join(timeout=10)
        self.buffer.close()

    def run_until_signalled(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: self.stop_event.set())
        self.start()
        while not self.stop_event.wait(1):
            if not self.forwarder.is_alive():
                log.error("the forwarder stopped; exiting so the service manager restarts the agent")
                break
        log.info("stopping")
        self.stop()
