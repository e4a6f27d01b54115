"""The CPU latency limit the daemon holds while it runs (boiler_ai.host)."""

from __future__ import annotations

import os
import struct
import sys

import pytest

from boiler_ai.host import CPU_DMA_LATENCY, CpuLatencyLimit


def test_limit_is_written_as_a_native_integer_and_released_on_exit(tmp_path):
    device = tmp_path / "cpu_dma_latency"
    device.write_bytes(b"")
    with CpuLatencyLimit(20, device) as limit:
        assert limit.held and limit.error is None
        assert struct.unpack("=i", device.read_bytes()) == (20,)
        fd = limit._fd
    assert not limit.held
    with pytest.raises(OSError):
        os.fstat(fd)  # closed: the kernel drops the request with the last close


def test_a_machine_that_refuses_leaves_a_reason_and_nothing_raised(tmp_path):
    with CpuLatencyLimit(0, tmp_path / "no-such-device") as limit:
        assert not limit.held
        assert "cannot open" in limit.error and "no-such-device" in limit.error


def test_no_limit_configured_touches_nothing(tmp_path):
    with CpuLatencyLimit(None, tmp_path / "no-such-device") as limit:
        assert not limit.held and limit.error is None


@pytest.mark.skipif(not (sys.platform == "linux" and os.access(CPU_DMA_LATENCY, os.W_OK)),
                    reason="needs write access to /dev/cpu_dma_latency (root, or the udev rule in deploy/)")
def test_the_kernel_applies_the_limit_while_held():
    def effective() -> int:
        fd = os.open(CPU_DMA_LATENCY, os.O_RDONLY)
        try:
            return struct.unpack("=i", os.read(fd, 4))[0]
        finally:
            os.close(fd)

    before = effective()
    if before == 0:
        pytest.skip("another process holds a 0 us limit: a tighter one cannot be seen")
    asked = min(7, before - 1)  # tighter than what is in force, so the kernel's answer shows ours
    with CpuLatencyLimit(asked) as limit:
        assert limit.held
        assert effective() == asked
    assert effective() == before
