"""What the daemon asks of the machine it runs on: a CPU latency limit while it runs.

A control cycle wakes once a second and runs about half a millisecond of its own code. If the cores
sleep deeply in between (C-states that power down their caches, or a hypervisor that hands the idle
core to someone else), every cycle starts cold and that half millisecond becomes one or more. The
kernel's PM QoS interface (/dev/cpu_dma_latency) keeps every core out of idle states slower to leave
than a limit, for as long as the file stays open: the kernel drops the request by itself when the
process exits, so a daemon that dies cannot leave the machine pinned. The price is power: with a
limit of 0 the idle cores poll instead of sleeping.
"""

from __future__ import annotations

import os
import struct
from pathlib import Path
from typing import Self

CPU_DMA_LATENCY = Path("/dev/cpu_dma_latency")


class CpuLatencyLimit:
    """Holds a PM QoS CPU latency request while entered. Never raises: a machine that refuses
    (no such device in a container, no permission) leaves `error` set and the daemon runs on."""

    def __init__(self, limit_us: int | None, device: Path = CPU_DMA_LATENCY):
        self.limit_us = limit_us  # None: leave the idle states to the OS
        self.device = device
        self.error: str | None = None
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> Self:
        if self.limit_us is None:
            return self
        try:
            fd = os.open(self.device, os.O_WRONLY)
        except OSError as exc:
            self.error = f"cannot open {self.device}: {exc.strerror or exc}"
            return self
        try:
            os.write(fd, struct.pack("=i", self.limit_us))  # the kernel reads a native 32-bit integer
        except OSError as exc:
            os.close(fd)
            self.error = f"cannot write {self.device}: {exc.strerror or exc}"
            return self
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
