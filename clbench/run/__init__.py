"""Running grids: executors (local, Ray), task orders, probe splits and per-strategy tuning."""
