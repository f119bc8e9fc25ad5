"""The local target: this machine, Microsoft's inference server in sandboxed replicas (`scoring/`)."""
