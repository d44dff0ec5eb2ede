"""LES02 elevator position system: CAN frame decoder, parse node, elevator model and simulator."""
