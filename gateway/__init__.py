"""Portique: a secure clinical messaging and file-exchange gateway for French dental practices."""

__version__ = "0.1.0"
