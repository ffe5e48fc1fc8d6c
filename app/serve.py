"""`workbench serve`: the config dataclass and the run function the CLI builds its flags from.

Kept free of gradio imports so that building the CLI parser stays fast; `run` imports the app.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from dataclasses import dataclass

from workbench.store import Store

PASSWORD_ENV = "WORKBENCH_SERVE_PASSWORD"


@dataclass
class ServeConfig:
    """Where and how the app listens."""

    host: str = "127.0.0.1"
    """Interface to listen on. The default keeps the app on this machine; 0.0.0.0 exposes it to the network."""
    port: int = 7860
    """TCP port."""
    model: str = "smollm2-135m-instruct"
    """Model for the live views (prompt inspector, steering): a registry name or a local HF folder."""
    threads: int = 1
    """Torch threads for live model calls. 1 keeps them fast while pipelines load the other cores
    (spinning torch threads slow to a crawl on a busy machine); raise it on a machine of your own."""
    username: str | None = None
    """Require this username (with a password) to open the app; None: no login."""
    password: str | None = None
    """Password for `username`; None reads the WORKBENCH_SERVE_PASSWORD environment variable."""

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ValueError(f"port must be in 1..65535, got {self.port}")
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.password is None and self.username is not None:
            self.password = os.environ.get(PASSWORD_ENV)
        if (self.username is None) != (self.password is None):
            raise ValueError(f"give both a username and a password (or {PASSWORD_ENV}), or neither")
        check_host(self.host)

    def auth(self) -> tuple[str, str] | None:
        """The (username, password) pair for gradio's launch, or None without login."""
        return (self.username, self.password) if self.username and self.password else None


def check_host(host: str) -> None:
    """ValueError naming `host` unless this machine can listen on it (an address of one of its
    interfaces, a name resolving to one, or 0.0.0.0 / ::)."""
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise ValueError(f"host {host!r} is not an address or a name that resolves: {err.strerror}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((address[0], 0))
        except OSError as err:
            raise ValueError(f"host {host!r} is not an address of this machine: {err.strerror}") from None


def exposure_warning(cfg: ServeConfig) -> str | None:
    """A warning when the app listens beyond this machine without a login, else None."""
    loopback = ipaddress.ip_address(socket.getaddrinfo(cfg.host, None)[0][4][0]).is_loopback
    if loopback or cfg.auth():
        return None
    return (f"warning: the app listens on {cfg.host} without a login: anyone who can reach this machine can read "
            f"the store and run the model; add --username (and {PASSWORD_ENV})")


def run(cfg: ServeConfig, store: Store) -> None:
    """Serve the app on `store` until interrupted (the CLI's global --store chooses the file)."""
    from app.server import build_app

    if warning := exposure_warning(cfg):
        print(warning, file=sys.stderr)

    demo = build_app(store, cfg.model, cfg.threads)
    demo.launch(server_name=cfg.host, server_port=cfg.port, auth=cfg.auth(), ssr_mode=False,
                show_error=False, footer_links=[])
