"""Error types with the exit codes the command line maps them to."""

from __future__ import annotations

__all__ = ["AuditInputError", "EXIT_OK", "EXIT_REGRESSION", "EXIT_BAD_INPUT", "EXIT_INTERNAL",
           "NEVER_DOWNLOADS"]

EXIT_OK = 0
EXIT_REGRESSION = 1
EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 3

#: The start of every message about data or weights that are not where the user said:
#: nothing is fetched at run time, the fix is always to put the files there.
NEVER_DOWNLOADS = "compaudit never downloads"


class AuditInputError(ValueError):
    """Bad user input: a file, field or option that does not meet its contract.

    The message names the file, the field and what was expected. The command line
    prints it on one line (one line per problem when several are collected) and exits
    with code 2.

    Parameters
    ----------
    problems
        One message per problem found. A single string is accepted.
    """

    exit_code = EXIT_BAD_INPUT

    def __init__(self, problems: str | list[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))
