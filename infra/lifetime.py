"""Child servers (moto, the emulator) end when the process that started them is gone, even if it died
without stopping them."""

from __future__ import annotations

import os
import threading


def exit_with_parent(stop: threading.Event, interval: float = 1.0) -> None:
    """Set ``stop`` once this process's parent changes (it died and we were re-parented)."""
    parent = os.getppid()

    def watch() -> None:
        while not stop.wait(interval):
            if os.getppid() != parent:
                stop.set()

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
