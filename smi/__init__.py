"""The command layer: ``smi`` parses options, calls the libraries, prints and exits.

Floors, imports only downwards: ``smi → validation → simulators → asymptotics``.
"""
