"""WebSocket nodes: the ``ws_sink`` event server and the ``tap`` debug client."""
