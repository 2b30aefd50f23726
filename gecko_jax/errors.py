"""The user-facing error types of gecko_jax and the exit code each gives on the command line.

A user error (a bad input file, a bad config value, a workdir whose checkpoints do not restore, an output that
cannot be written) is raised as one of the classes below with a one-line message that names the file (and line and
field where there is one). ``gecko-jax`` prints that line on stderr and exits with the code of :data:`EXIT_CODES`;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

# One input-error type for both packages: data_gen's (a ValueError whose message starts with ``file:line:`` where
# known), so a JSONL error raised by data_gen's readers is the same error here and exits with the same code.
from data_gen.errors import InputError

__all__ = ["InputError", "ConfigError", "RestoreError", "OutputError", "EXIT_CODES", "exit_code", "exit_codes_help"]


class ConfigError(ValueError):
    """A config value is wrong; the message names the field and what was expected."""


class RestoreError(RuntimeError):
    """No checkpoint in a workdir restores; the message names the checkpoint folder."""


class OutputError(OSError):
    """An output could not be written (disk full, permission denied, a folder in the way); names the path.

    ``errno`` and ``filename`` are those of the failed write; ``str()`` is the one-line message alone.
    """

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else super().__str__()


# code -> meaning, in the order ``--help`` lists them. argparse's own usage errors also exit 2.
EXIT_CODES = {
    0: "success",
    1: "train: the loss became NaN/inf (the newest checkpoint is the last good one); any other exit 1 is a bug",
    2: "bad input: an argument, or a file that is missing, unreadable or malformed (file:line: field is named)",
    3: "config error: a config field of the wrong type or value (the field is named)",
    4: "could not restore: no checkpoint in the workdir restores (damaged ones are named)",
    5: "could not write an output: disk full, permission denied, or a folder in the way (the path is named)",
    143: "train: stopped by SIGTERM after saving a checkpoint; rerun the same command to resume",
}
EXIT_INPUT, EXIT_CONFIG, EXIT_RESTORE, EXIT_OUTPUT = 2, 3, 4, 5


def exit_code(error: BaseException) -> int | None:
    """The exit code of a user error, or None for anything else (a bug: keep the traceback)."""
    if isinstance(error, OutputError):
        return EXIT_OUTPUT
    if isinstance(error, ConfigError):
        return EXIT_CONFIG
    if isinstance(error, RestoreError):
        return EXIT_RESTORE
    if isinstance(error, (InputError, FileNotFoundError, NotADirectoryError, IsADirectoryError, UnicodeDecodeError)):
        return EXIT_INPUT
    return None


def exit_codes_help(codes=(0, 2, 3, 4, 5)) -> str:
    """The ``exit codes:`` block of a command's ``--help``."""
    return "exit codes:\n" + "\n".join(f"  {c:<4} {EXIT_CODES[c]}" for c in codes)
