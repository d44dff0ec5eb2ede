"""The operator palette: generic, declarative nodes that rewire pipelines without Python.

``filter``, ``switch``, ``change``, ``deadband``, ``throttle``, ``batch``, ``delay`` and
``dbc_decode``; conditions use :mod:`les02_flow.conditions`. Time-based operators read the
messages' own timestamps (frame time), so a replay at full speed gives the output a live run
gives; each node's docstring says where wall time is involved.
"""
