"""Inbound channels other than the HTTP API: the HL7v2 MLLP listener (``hub.channels.mllp``).

A channel sits at the level of ``hub.api``: it authenticates nothing by itself (network
placement does, as for every MLLP peer), makes each message durable in the inbox and only then
answers. Transports (``connectors.mllp``) are found by entry point (group ``hub.transports``):
the hub core never imports a connector.
"""
