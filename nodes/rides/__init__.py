"""Ride detection (``ride_detect``) and the SQLite ride store (``ride_store``).

:mod:`.detector` is the pure detector (no I/O, no asyncio, no Rx); :mod:`.detect` and
:mod:`.store` are the node wrappers.
"""
