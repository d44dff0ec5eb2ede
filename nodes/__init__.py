"""Built-in node types of les02-flow (installed as ``les02_flow.nodes``)."""
