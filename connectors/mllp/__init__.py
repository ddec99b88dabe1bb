"""MLLP (HL7v2 over TCP) transport: an asyncio listener and a client.

Imports only ``hub.hl7v2`` and the standard library; the hub supplies ``on_message``.
"""

from __future__ import annotations

from connectors.mllp.client import MllpClient, MllpClientError, send_messages
from connectors.mllp.listener import ListenerStats, MessageHandler, MllpListener

__all__ = [
    "ListenerStats",
    "MessageHandler",
    "MllpClient",
    "MllpClientError",
    "MllpListener",
    "send_messages",
]
