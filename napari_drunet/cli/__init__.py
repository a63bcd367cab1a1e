"""The ``drunet`` command line: train, finetune, widen, predict, evaluate, export, models,
samples, demo, adapt, project.

User mistakes (bad paths, unreadable files, incompatible models) end with one line
``error: ...`` on stderr and exit status 2, without a traceback.

Each sub-command is one module of this package that owns its parser and its handler:
``add_parser(sub)`` adds the parser and sets its ``run(args) -> int``; this module only
assembles them and turns errors into that one line.
"""

from __future__ import annotations

import argparse
import logging
import sys
import warnings

from ..core.errors import DrunetError
from . import adapt, demo, evaluate, export, models, predict, project, samples, train, widen

#: the sub-commands in the order ``drunet --help`` lists them
COMMANDS = (train, predict, evaluate, export, widen, adapt, models, samples, demo, project)


class _Parser(argparse.ArgumentParser):
    """Argument errors as one ``error: ...`` line and exit status 2, like every other user
    error (argparse prints the whole usage first)."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"error: {self.prog}: {' '.join(message.split())} (see {self.prog} "
                  "--help)\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``drunet`` parser with every sub-command of :data:`COMMANDS`."""
    parser = _Parser(
        prog="drunet", description="DRU-Net segmentation of 2D/3D medical images.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def _version() -> str:
    from .. import __version__

    return f"napari-drunet {__version__}"


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``drunet`` command."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, --version, or a bad argument (one line printed)
        return int(stop.code or 0)
    # the user sees our one-line messages, not library warnings or log records about bad files
    # (python -W ... or PYTHONWARNINGS bring the warnings back)
    tiff_log = logging.getLogger("tifffile")
    old_level = tiff_log.level
    try:
        with warnings.catch_warnings():
            if not sys.warnoptions:
                warnings.simplefilter("ignore")
            tiff_log.setLevel(logging.CRITICAL)
            return args.run(args)
    except DrunetError as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    except OSError as err:  # missing, unreadable or unwritable paths, full disk ...
        text = f"{err.strerror or err}: {err.filename or ''}".rstrip(": ")
        print(f"error: {' '.join(text.split())}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory; try a smaller --tile-size or --patch-size", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    finally:
        tiff_log.setLevel(old_level)

