"""Drivers of the step loop: ``local`` (threads in this process); ``aws`` comes later."""

from durable.runtime.local import Runtime, run

__all__ = ["Runtime", "run"]
