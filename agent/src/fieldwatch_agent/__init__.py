"""Fieldwatch edge agent: polls Modbus meters, buffers every reading in SQLite, forwards to Fieldwatch."""

__version__ = "0.1.0"
