"""Layer 4: the gateway in front of every serving route (keys, roles, limits, audit, metrics)."""
