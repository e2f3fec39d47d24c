"""Asymptotics of sequence multi-index models and deep tied attention networks."""

__version__ = "0.1.0"
