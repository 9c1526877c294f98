"""An offline emulator of Pinecone Assistant's HTTP API (control plane, files, chat, context)."""

from infra.emulator.faults import FaultConfig
from infra.emulator.models import Backend
from infra.emulator.server import DEFAULT_API_KEY, EmulatorServer

__all__ = ["DEFAULT_API_KEY", "Backend", "EmulatorServer", "FaultConfig"]
