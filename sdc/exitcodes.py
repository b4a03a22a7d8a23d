"""Exit codes shared by every command, aligned with Nagios and node-problem-detector."""

from enum import IntEnum


class ExitCode(IntEnum):
    HEALTHY = 0  # nothing wrong found
    FAULT = 1  # a chip is wrong, slow or inconsistent (or became suspect / quarantined)
    UNKNOWN = 2  # could not decide: bad input, unreachable store, internal error
