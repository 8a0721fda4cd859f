"""`profile` and `debug`: an artifact's per-op times and per-layer numerics, in its real runtime.
The runtime-specific halves are the targets' `profile`/`capture` hooks (conversion/*_ops.py)."""
