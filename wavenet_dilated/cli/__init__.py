"""The ``wavenet-dilated`` command: ``sample``, ``vocode``, ``mel``, ``evaluate``, ``rf``, ``bench``, ``info`` and
``train``, one module each.

One entry point, :func:`cli`, behind the ``[project.scripts]`` entry (and ``python -m wavenet_dilated``). It returns an
exit status instead of exiting, so tests can run it in-process::

    >>> cli(["rf", "--layers", "6", "--compare"])  # doctest: +SKIP
    0

Errors a user can cause (a missing or foreign checkpoint, a mel with the wrong number of bins, an unwritable output
directory, a bad flag value …) print one line, ``wavenet-dilated: error: …``, on stderr and return 2. The library
raises ``ValueError`` / ``FileNotFoundError`` / ``OSError`` for those; only :func:`cli` turns them into that line, so a
genuine bug still shows its traceback.

argparse lives in this folder and nowhere else in the package (``recipes/`` wraps :mod:`wavenet_dilated.cli.train`).

Runtime settings (:data:`~wavenet_dilated.runtime.RUNTIME_ENV`: OpenMP's wait policy, glibc's malloc thresholds) hold
only when they are in place before torch is imported, so this module and :mod:`.common` import no torch; the commands
are imported by :func:`build_parser`. Started as a program (``wavenet-dilated …`` or ``python -m wavenet_dilated …``):

* ``train`` applies them in this process before the parser is built (the values a user set are kept), as the recipe
  does;
* ``bench`` restarts itself once with them in its environment after parsing, so that it measures under the settings
  the training command and ``benchmarks/run.py`` use;
* ``sample``, ``vocode``, ``mel``, ``evaluate``, ``rf`` and ``info`` run as they are: vocoding took the same time with
  and without the settings (within the noise, less than a restart would add), and ``rf`` and ``info`` hardly compute.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ..runtime import apply_runtime_env, reexec_with_runtime_env
from .common import PROG, Parser, UsageError, fail, show_warning

__all__ = ["COMMANDS", "build_parser", "cli"]

#: the commands, in the order ``--help`` lists them
COMMANDS = ("sample", "vocode", "mel", "evaluate", "rf", "bench", "info", "train")
#: exit status when stdout was closed before the output was written (128 + SIGPIPE, as a shell reports it)
EXIT_BROKEN_PIPE = 141
#: the module ``python -m wavenet_dilated`` runs as ``__main__``
_MAIN_MODULE = f"{__package__.rpartition('.')[0]}.__main__"


def build_parser() -> Parser:
    """The whole command line: one parser with a subparser per command; each sets ``run`` to its function."""
    # they import torch: only once the runtime settings are applied
    from . import bench, evaluate, info, mel, rf, sample, train, vocode

    parser = Parser(
        prog=PROG,
        description="WaveNet with dilated convolutions: sample audio from a checkpoint, study receptive fields, "
        "benchmark generation, inspect checkpoints, train.",
        epilog=f"Run '{PROG} COMMAND --help' for the flags of one command.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}",
                        help="print the package version and exit")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for module in (sample, vocode, mel, evaluate, rf, bench, info, train):
        module.add_parser(commands)
    return parser


def cli(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit status.

    0 on success, 2 for a user error (one line on stderr), 1 for a diverged training run, 130 when interrupted, 141
    (quietly) when stdout was closed before the output was written.
    ``--help`` and ``--version`` print and return 0.
    """
    as_program = argv is None and _started_as_the_command()
    if as_program and _command_word(sys.argv[1:]) == "train":
        apply_runtime_env()  # before build_parser() imports torch
    parser = build_parser()
    try:
        args = parser.parse_args(None if argv is None else list(argv))
    except UsageError as err:
        return fail(str(err))
    except SystemExit as done:  # --help, --version: argparse printed and "exited"
        return done.code if isinstance(done.code, int) else 0
    if args.command is None:
        return fail(f"choose a command: {', '.join(COMMANDS[:-1])} or {COMMANDS[-1]} (see '{PROG} --help')")
    if as_program and args.command == "bench":
        reexec_with_runtime_env()  # returns when the settings are already there (or this is the restarted process)
    try:
        with warnings.catch_warnings():  # restores the default display afterwards
            warnings.showwarning = show_warning
            return args.run(args)
    except BrokenPipeError:  # stdout closed early (`... | head`): nothing left to say, and no one to say it to
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except (ValueError, FileNotFoundError, OSError) as err:
        return fail(str(err) or type(err).__name__)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


def _silence_stdout() -> None:
    """Point stdout at the null device, so that the interpreter's final flush does not fail on the closed pipe too."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor behind sys.stdout (in-process use): nothing to redirect
        pass


def _command_word(argv: Sequence[str]) -> str | None:
    """The command in a raw command line: the first word that is not an option (the top level takes no values)."""
    return next((word for word in argv if not word.startswith("-")), None)


def _started_as_the_command() -> bool:
    """Whether this process is ``wavenet-dilated …`` or ``python -m wavenet_dilated …``: then running its command line
    again runs this command again (not so when :func:`cli` is called from another program)."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name == _MAIN_MODULE:
        return True
    return Path(getattr(main, "__file__", None) or "").stem == PROG
