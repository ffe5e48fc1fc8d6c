"""`workbench serve`: the config dataclass and the run function the CLI builds its flags from.

Kept free of gradio imports so that building the CLI parser stays fast; `run` imports the app.
"""

from __future__ import annotations

import os
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

    def auth(self) -> tuple[str, str] | None:
        """The (username, password) pair for gradio's launch, or None without login."""
        return (self.username, self.password) if self.username and self.password else None


def run(cfg: ServeConfig, store: Store) -> None:
    """Serve the app on `store` until interrupted (the CLI's global --store chooses the file)."""
    from app.server import build_app

    demo = build_app(store, cfg.model, cfg.threads)
    demo.launch(server_name=cfg.host, server_port=cfg.port, auth=cfg.auth(), ssr_mode=False,
                show_error=False, footer_links=[])
