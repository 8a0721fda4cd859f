"""Shared benchmark helpers. Ratios, not absolutes, are what to compare: every row of a table is
measured in the same run, on the same threads. The timer is the one `validate` uses."""

from edgemnv2.timing import machine, time_interleaved, time_runner  # noqa: F401
