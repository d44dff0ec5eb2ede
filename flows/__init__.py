"""The built-in flows (``*.yaml``), shipped as package data.

Found with ``les02_flow.resources.builtin_flow``.
"""
