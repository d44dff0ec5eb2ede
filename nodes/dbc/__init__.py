"""DBC files (cantools): decode any CAN message a DBC describes into events."""
