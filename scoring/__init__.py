"""Test scoring and the local replica runtime. Nothing here imports Django."""
