"""CURVE keys for a test's decision stream, in the layout `boiler-ai keys` writes (boiler_ai/record/curve.py)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from boiler_ai.record.curve import AUTHORIZED, CLIENTS, SERVER, create_keys, load_client_keys, load_server_keys


@dataclass(frozen=True)
class StreamKeys:
    directory: Path

    @property
    def config(self) -> dict:
        """The daemon config's `record.curve`."""
        return {"server_secret_key": str(self.directory / f"{SERVER}.key_secret"),
                "authorized_clients": str(self.directory / AUTHORIZED)}

    def server(self):
        return load_server_keys(self.directory / f"{SERVER}.key_secret", self.directory / AUTHORIZED)

    def client(self, name: str = "historian"):
        return load_client_keys(self.directory / CLIENTS / f"{name}.key_secret", self.directory / f"{SERVER}.key")

    def options(self, name: str = "historian") -> list[str]:
        """A subscriber command's key options."""
        return ["--client-key", str(self.directory / CLIENTS / f"{name}.key_secret"),
                "--server-key", str(self.directory / f"{SERVER}.key")]


def stream_keys(directory: Path, *clients: str) -> StreamKeys:
    create_keys(directory, list(clients or ("historian",)))
    return StreamKeys(directory)
