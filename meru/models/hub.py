"""The Hugging Face Hub, reached fast or not at all: without network, huggingface_hub retries each request
five times with back-off (about 23 s and 22 lines of warnings per file). :func:`offline_unless_reachable`
probes the endpoint once (a TCP connect, a few seconds at most) and, when it does not answer, switches
huggingface_hub to offline mode (``HF_HUB_OFFLINE``: the local cache only, no requests, no retries).
Torch-free."""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlparse

PROBE_TIMEOUT_S = 3.0


def endpoint_reachable(endpoint: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to ``endpoint``'s host and port opens within ``timeout`` seconds (name
    resolution included: it runs in a daemon thread, so a hanging resolver cannot hold the caller)."""
    url = urlparse(endpoint)
    if not url.hostname:
        return False
    port = url.port or (443 if url.scheme == "https" else 80)
    opened: list[bool] = []

    def probe() -> None:
        try:
            socket.create_connection((url.hostname, port), timeout=timeout).close()
            opened.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(opened)


def offline_unless_reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Put huggingface_hub in offline mode unless its endpoint (``HF_ENDPOINT``) answers; returns True when
    offline (already, by ``HF_HUB_OFFLINE=1``, or now)."""
    from huggingface_hub import constants

    if constants.is_offline_mode():
        return True
    if endpoint_reachable(constants.ENDPOINT, timeout):
        return False
    constants.HF_HUB_OFFLINE = True
    return True
