"""The local stack: moto, the emulator and the worker poller on 127.0.0.1."""

from infra.local.stack import LocalStack

__all__ = ["LocalStack"]
