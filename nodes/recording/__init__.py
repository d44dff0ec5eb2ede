"""Recording and replaying sessions: the ``file_recorder`` and ``replay_source`` nodes.

* :mod:`.formats` -- suffix -> format, python-can writers, tolerant readers (plain Python);
* :mod:`.recorder` -- path templates, rotation, the writer thread (plain Python);
* :mod:`.replay` -- replay timeline, window, id filter, progress line (plain Python);
* :mod:`.file_recorder`, :mod:`.replay_source` -- the node wrappers.
"""
