"""The ``fakescope`` command line: thin commands over the library, one module per command group.

==============  ===========================================================
``train``       train, demo, fuse: commands that make detectors
``evaluate``    evaluate, robustness, protocol, report
``experiments`` loso, crossval (train several detectors, test each)
``predict``     predict
``models``      models, info, export
``serve``       serve (also ``python -m fakescope.serve``)
``scan``        scan (Ray)
``audit``       audit
==============  ===========================================================

Options that several commands share are defined once, in :mod:`fakescope.cli.common`; no
command module imports another.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from fakescope.cli import audit, evaluate, experiments, models, predict, scan, serve, train
from fakescope.cli.common import EXIT_BROKEN_PIPE, EXIT_ERROR

COMMANDS = (train, evaluate, experiments, predict, models, serve, scan, audit)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    from fakescope.version import __version__

    parser = argparse.ArgumentParser(
        prog="fakescope", description="Tell AI-generated images and videos from real ones."
    )
    parser.add_argument("--version", action="version", version=f"fakescope {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS:
        command.add_parsers(sub)
    summaries = {a.dest: a.help for a in sub._choices_actions}
    for name, p in sub.choices.items():
        p.formatter_class = HelpFormatter
        p.description = p.description or summaries.get(name)
    return parser


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the help already says it, or the option
    is a switch (``--x``/``--no-x``: its name says what giving it does; its default is "not
    given", not the ``True`` or ``False`` it stores)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        quiet = action.default in (None, False, [], "", argparse.SUPPRESS)
        switch = action.nargs == 0
        said = "default" in text or f"({action.default})" in text
        if not action.option_strings or quiet or switch or said:
            return text
        return f"{text} (default: %(default)s)"


def _user_errors() -> tuple[type[BaseException], ...]:
    """Errors that mean "fix your input", printed as one line. Checked after the fact, so the
    parser never imports torch: an error class whose module was never imported cannot have
    been raised."""
    errors: list[type[BaseException]] = [FileExistsError, FileNotFoundError, ValueError]
    for module, name in (
        ("fakescope.data.images", "DataError"),
        ("fakescope.models.header", "CheckpointError"),
        ("fakescope.models.registry", "WeightsError"),
    ):
        if module in sys.modules:
            errors.append(getattr(sys.modules[module], name))
    return tuple(errors)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: parse ``argv``, run the subcommand, turn known errors into one clear line."""
    from fakescope.utils import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(-1 if args.quiet else args.verbose)
    try:
        code = args.func(args)
        sys.stdout.flush()  # a reader that went away shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        return stdout_closed()
    except KeyboardInterrupt:
        print(f"fakescope: interrupted{_resume_hint(args)}", file=sys.stderr)
        return 130
    except ModuleNotFoundError as e:
        from fakescope.utils import missing_extra_message

        extra = "ray" if args.command == "scan" else None  # Ray Data, and Parquet to write
        message = missing_extra_message(e, f"fakescope {args.command}", extra)
        if message is None:
            raise
        print(f"fakescope: error: {message}", file=sys.stderr)
        return EXIT_ERROR
    except Exception as e:
        if not isinstance(e, _user_errors()):
            raise
        print(f"fakescope: error: {e}", file=sys.stderr)
        return EXIT_ERROR


def _resume_hint(args: argparse.Namespace) -> str:
    """What an interrupted command kept and how to go on: only for commands that resume."""
    if not hasattr(args, "resume"):
        return ""
    if args.command == "train":
        return "; completed epochs are saved, continue with --resume"
    return "; rows already written are kept, continue with --resume"


def stdout_closed() -> int:
    """The reader of stdout went away (``fakescope info CKPT | head``): stop quietly, as Unix
    tools do, with 141 (128 + SIGPIPE). Whatever is still buffered for stdout goes to devnull, so
    that the interpreter's last flush does not complain either."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):  # stdout without a file descriptor (captured, replaced...)
        pass
    return EXIT_BROKEN_PIPE


if __name__ == "__main__":
    sys.exit(main())
