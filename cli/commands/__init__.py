"""One module per family of commands; each has `register(subparsers)`, which sets every leaf's `handler`."""
