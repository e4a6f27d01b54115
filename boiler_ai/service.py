"""The daemon and its service manager: systemd's notify protocol (sd_notify), in a few lines, no dependency.

Under `Type=notify` systemd passes NOTIFY_SOCKET, the address of a unix datagram socket (a path, or an
abstract name written with a leading '@'), and reads newline-separated KEY=VALUE datagrams on it
(sd_notify(3)). The daemon sends READY=1 after its first healthy cycle (so `systemctl start` returns
once the daemon really runs), WATCHDOG=1 after each healthy cycle (with WatchdogSec=, systemd kills
and restarts a daemon whose cycles stop), STATUS= what it is waiting for (shown by `systemctl status`),
and STOPPING=1 when asked to stop. Without NOTIFY_SOCKET (run by hand, in a container) every call
does nothing.

The socket is non-blocking: a service manager that does not read cannot stall a control cycle; a
message that cannot be sent is dropped, and the first such failure is logged (once: the watchdog
says the rest).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

from boiler_ai.logs import event

log = logging.getLogger("boiler_ai.service")


class ServiceManager:
    """Talks to the service manager named by `environ` (the process's environment by default)."""

    def __init__(self, environ: Mapping[str, str] | None = None):
        environ = os.environ if environ is None else environ
        address = environ.get("NOTIFY_SOCKET", "")
        self.address: str | None = None
        self.ready = False
        self._sock: socket.socket | None = None
        self._failed = False
        if not address:
            return
        if address.startswith("@"):
            address = "\0" + address[1:]  # abstract namespace
        elif not address.startswith("/"):
            event(log, logging.WARNING, "NOTIFY_SOCKET is not a unix socket: not notifying the service manager",
                  notify_socket=address)
            return
        self.address = address
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._sock.setblocking(False)

    @property
    def active(self) -> bool:
        return self._sock is not None

    def notify(self, *assignments: str) -> None:
        """Send KEY=VALUE assignments as one datagram."""
        if self._sock is None:
            return
        try:
            self._sock.sendto("\n".join(assignments).encode(), self.address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                event(log, logging.WARNING, "cannot notify the service manager (watchdog may restart the daemon)",
                      notify_socket=self.address.replace("\0", "@"), error=exc.strerror or str(exc))

    def healthy_cycle(self) -> None:
        """READY=1 for the first healthy cycle, WATCHDOG=1 for every one after."""
        if self.ready:
            self.notify("WATCHDOG=1")
        else:
            self.ready = True
            self.notify("READY=1", "WATCHDOG=1")

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")

    def stopping(self) -> None:
        self.notify("STOPPING=1", "STATUS=stopping: handing control back to the DCS")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
