"""Whether a server answers, asked once with a short timeout before a client that would otherwise retry for minutes
(the W&B SDK waits about 100 s, then raises ``CommError``, when its server cannot be reached)."""

from __future__ import annotations

import socket
from urllib.parse import urlparse


def reachable(url: str, timeout: float) -> tuple[bool, str]:
    """(True, "") when a TCP connection to ``url``'s host and port opens within ``timeout`` seconds, else
    (False, why)."""
    parsed = urlparse(url if "://" in url else f"https://{url}")
    host = parsed.hostname or ""
    port = parsed.port or (80 if parsed.scheme == "http" else 443)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, ""
    except OSError as err:
        return False, f"{host}:{port} {err.strerror or type(err).__name__}"
