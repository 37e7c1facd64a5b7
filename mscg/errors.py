"""The errors mscg raises for users. The CLI prints their message on one line and exits.

Library code raises these; it never prints or exits. `assert` is kept for internal invariants.
"""


class MscgError(Exception):
    """Base class: a problem the user can fix. `exit_code` is what the CLI returns."""

    exit_code = 1


class DataError(MscgError):
    """An input file or artifact is malformed, inconsistent or of the wrong kind (exit 1)."""

    exit_code = 1


class UsageError(MscgError):
    """Flags that cannot work together, or an output that exists without --force (exit 2)."""

    exit_code = 2
