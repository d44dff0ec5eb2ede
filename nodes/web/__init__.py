"""The web console (``web_console``): the flow, the lift and the rides in a browser."""
