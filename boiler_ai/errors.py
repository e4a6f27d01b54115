"""Failures an operator can fix, as types: the command line prints each as one line and exits 2.

Every message names the thing to fix (file and field, address, directory, package, unit), so the
line alone tells the operator what to change. Anything else that escapes a command is a bug and
keeps its traceback. Ground floor: stdlib only, importable from every room.
"""

from __future__ import annotations

EXIT_CODE = 2


class ExpectedError(Exception):
    """A failure of the setup, not of the code: bad input, a busy port, a missing file or package."""


class CannotListen(ExpectedError):
    """An address the command must listen on cannot be bound (in use, or not an address of this host)."""


class CannotConnect(ExpectedError):
    """A server the command needs (a database, say) refuses or does not answer; the message names host:port."""


class UnknownHost(ExpectedError):
    """A host name that does not resolve on this machine."""


class FileAccessError(ExpectedError):
    """A file that cannot be read, or a directory that cannot be created or written."""


class MissingExtra(ExpectedError):
    """An optional dependency is not installed; the message names the extra that brings it."""

    def __init__(self, what: str, extra: str, module: str):
        self.extra, self.module = extra, module
        super().__init__(f"{what} needs the Python package {module!r}, which is not installed: "
                         f"pip install 'boiler-ai[{extra}]'")


class UnknownUnit(ExpectedError):
    """A unit id that the file, log or database at hand does not hold."""
