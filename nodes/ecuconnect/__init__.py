"""ECUconnect Logger: the TCP protocol CANcorder reads, as les02-flow nodes.

* :mod:`.codec` -- the wire format (pure: ``encode``, incremental ``Decoder``);
* :mod:`.broadcast` -- per-client bounded backlog and batch coalescing (pure);
* :mod:`.zeroconf` -- service name, TXT record, addresses, register/browse helpers;
* :mod:`.sink` -- the ``ecuconnect_tcp_sink`` node (a better ``canlogger.py``);
* :mod:`.source` -- the ``ecuconnect_source`` node (read another logger's bus).

See ``docs/ecuconnect.md``.
"""
