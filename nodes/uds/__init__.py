"""UDS diagnostic traffic simulator: ISO-TP segmentation, the session generator and ``uds_sim``."""
