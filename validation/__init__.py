"""Validation of the theory against closed forms, published curves and simulation."""
