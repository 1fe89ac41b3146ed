"""Clients for the outside systems: each system's calls live in one module here."""
