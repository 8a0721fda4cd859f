"""Confinement of the processes that run artifacts (Landlock, resource limits)."""
