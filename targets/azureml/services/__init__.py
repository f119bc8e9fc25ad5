"""Azure work people ask for (workspaces, keys, logs) and a worker does (the connection test, the sync)."""
