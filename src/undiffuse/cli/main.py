"""``undiffuse`` entry point: parses the command, runs it, and turns user errors into one line.

Every command is a module of this package with ``add_parser(subparsers)`` and ``run(args) -> int``.
A :class:`~undiffuse.errors.UserError` (bad config, data, checkpoint, …) is printed as
``undiffuse: error: <problem — fix>`` on stderr with exit status 2, never as a traceback; so is every
``OSError`` that reaches the command line (full disk, a path under a regular file, no permission, …),
with its cause and fix (:func:`undiffuse.errors.os_error_message`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

from undiffuse.cli.common import add_quiet, common_settings

COMMANDS = ("train", "distill", "sample", "nll", "noise", "schedule", "eval", "bench", "edit", "forecast", "study", "serve")


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser (and, through ``add_subparsers``, every command's) whose errors are one line
    ``undiffuse: error: problem — fix`` with exit status 2, like the commands' own errors; --help is unchanged."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"undiffuse: error: {' '.join(message.split())} — see `{self.prog} --help`\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="undiffuse",
        description="Diffusion models: train, sample, evaluate likelihood and quality, benchmark.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"undiffuse.cli.cmd_{name}")
        except ModuleNotFoundError as err:  # a command whose module is not part of this build
            if err.name != f"undiffuse.cli.cmd_{name}":
                raise
            continue
        module.add_parser(sub)
        add_quiet(sub.choices[name])
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from undiffuse.errors import UserError
    from undiffuse.schedules import ScheduleError

    return (UserError, ScheduleError)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with common_settings(args):
            return int(args.func(args) or 0)
    except _user_errors() as err:
        print(f"undiffuse: error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("undiffuse: interrupted", file=sys.stderr)
        return 130
    except OSError as err:  # a full disk, a path under a file, no permission, …: one line, never a traceback
        from undiffuse.errors import os_error_message

        print(f"undiffuse: error: {os_error_message(err)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
