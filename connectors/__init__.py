"""Outbound connectors: one module per transport, one small interface (connectors.base)."""
