"""Error types the CLI maps to exit codes (DESIGN §3): UserError -> 2, CheckFailed -> 1."""


class UserError(Exception):
    """Bad input: unknown model, unreadable/mismatched checkpoint, invalid config, wrong size.

    The message is one line saying what, where and what to do; the CLI prints it and exits 2.
    """


class CheckFailed(Exception):
    """A check ran and failed (parity over threshold, engine/manifest mismatch): exit 1."""
