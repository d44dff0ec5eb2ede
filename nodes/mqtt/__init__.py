"""MQTT fleet nodes: ``mqtt_sink`` (edge: events and frame batches to a broker, with an
on-disk spool) and ``mqtt_source`` (central: subscribe and decode). See docs/fleet.md."""
