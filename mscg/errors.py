"""The errors mscg raises for users. The CLI prints their message on one line and exits.

Library code raises these; it never prints or exits. `assert` is kept for internal invariants.
"""


class MscgError(Exception):
    """Base class: a problem the user can fix. `exit_code` is what the CLI returns."""

    exit_code = 1


class DataError(MscgError):
    """An input file or artifact is malformed, inconsistent or of the wrong kind (exit 1)."""

    exit_code = 1


class UnknownItemError(DataError):
    """An item id the model's catalogue does not hold (`item_id` names it)."""

    def __init__(self, item_id: str, message: str):
        super().__init__(message)
        self.item_id = item_id


class UsageError(MscgError):
    """Flags that cannot work together, or an output that exists without --force (exit 2)."""

    exit_code = 2


class DivergedError(MscgError):
    """Training stopped because its loss or weights stopped being finite (exit 1): a lower --lr is the fix."""

    exit_code = 1


class WriteError(MscgError):
    """An output cannot be written now: the disk is full, or another mscg process is writing it (exit 1)."""

    exit_code = 1
