"""Finite-size simulators: GAMP on synthetic data and training of attention networks."""
