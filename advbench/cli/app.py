"""The Typer application, its global options, and the entry point that turns a UserError into one line and
exit code 2."""

from __future__ import annotations

import os
import sys
import warnings
from typing import Annotated, Any, Optional

import typer

from advbench.errors import UserError

app = typer.Typer(
    name="advbench",
    help="Train, attack and compare adversarially robust image classifiers.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


STATE = {"debug": False}


SetOpt = Annotated[Optional[list[str]], typer.Option(
    "--set", help="Extra option KEY=VALUE (repeatable), typed and validated: defense options (beta=6), "
    "train options (momentum=0.9), model.KEY, data.KEY.", show_default=False)]


QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]


ThreadsOpt = Annotated[Optional[int], typer.Option(
    help="Torch CPU threads of this process [default: torch's, one per core]; on a shared or busy machine "
    "keep processes x threads <= free cores. Recorded in the result.")]


def set_threads(threads: int | None) -> None:
    """Apply ``--threads`` (torch intra-op CPU threads of this process); None keeps torch's default."""
    if threads is None:
        return
    if threads < 1:
        from advbench.errors import UserError

        raise UserError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    width = None if stream.isatty() else 160  # pipes and logs: wide enough that tables are not truncated
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=width)


def _print_version(value: bool) -> None:
    if value:
        from advbench import __version__

        sys.stdout.write(f"advbench {__version__}\n")
        raise typer.Exit(0)


@app.callback()
def main_options(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False,
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit.", is_eager=True,
                                          callback=_print_version)] = False,
) -> None:
    """advbench: one place to train defenses, attack them honestly and compare them as papers do."""
    STATE["debug"] = debug


def _click_exceptions():
    """Click's exception classes: typer >= 0.2x vendors click as ``typer._click``; older typer uses click."""
    try:
        from typer._click import exceptions as exc_mod  # type: ignore[attr-defined]
    except ImportError:  # pragma: no cover - older typer
        from click import exceptions as exc_mod
    exit_cls = getattr(exc_mod, "Exit", typer.Exit)
    abort_cls = getattr(exc_mod, "Abort", typer.Abort)
    return exc_mod.UsageError, exit_cls, abort_cls


def one_line(text: str) -> str:
    """``text`` on one line: line breaks and runs of white space folded into single spaces."""
    return " ".join(text.split())


#: metavars that say what to type (Typer would print its internal types: <str>, <list[Path]>)
_METAVARS = {"eps": "EPS", "norm": "NORM", "out": "DIR", "data_dir": "DIR", "resume": "RUN", "run": "RUN",
             "paths": "RUNS", "config": "FILE.toml", "output": "FILE", "plots": "DIR", "set_": "KEY=VALUE",
             "checkpoint": "best|last|FILE", "model_module": "MODULE:FACTORY", "source": "RUN", "init_from": "RUN",
             "seeds": "S,S,...", "rows": "ROW", "format_": "FORMAT", "grid": "PAPER:TABLE", "table": "N",
             "what": "WHAT", "name": "NAME", "paper": "PAPER", "block": "BLOCK"}


def _name_metavars(command: Any) -> None:
    """Give every parameter of every subcommand a metavar a reader understands (``--eps EPS``, ``RUNS...``)."""
    for sub in getattr(command, "commands", {}).values():
        for param in sub.params:
            if getattr(param, "is_flag", False) or param.metavar is not None:
                continue
            descriptor = getattr(param, "type_descriptor", None)
            kind = getattr(descriptor, "annotation", None) or getattr(getattr(param, "type", None), "name", "")
            param.metavar = _METAVARS.get(param.name or "") or {int: "N", float: "X", "integer": "N",
                                                                 "float": "X"}.get(kind) or \
                (param.name or "value").upper().rstrip("_")
            if getattr(param, "param_type_name", "") == "argument":  # the metavar says it; no "<list[Path]>" after
                param.display_type = lambda *args, **kwargs: ""  # type: ignore[method-assign]


_COMMAND: dict[tuple[int, int], Any] = {}


def _command() -> Any:
    """The click command of ``app``, built once per process (typer reads every command's signature to build it:
    ~40 ms a call), again if a command or group was added since."""
    key = (len(app.registered_commands), len(app.registered_groups))
    if key not in _COMMAND:
        command = typer.main.get_command(app)
        _name_metavars(command)
        _COMMAND.clear()
        _COMMAND[key] = command
    return _COMMAND[key]


def main(argv: list[str] | None = None) -> int:
    """Entry point: one line and exit 2 for user errors; 130 after a clean interrupt."""
    usage_error, exit_error, abort_error = _click_exceptions()

    command = _command()
    args = list(sys.argv[1:] if argv is None else argv)
    STATE["argv"] = args  # `train --nproc` relaunches this command line under torchrun
    debug = "--debug" in args
    err = console(stderr=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        code = _dispatch(command, args, debug, err, usage_error, exit_error, abort_error)
    if code in (0, 130) or debug:  # library warnings, one line each; an error exit shows its one line alone
        for text in dict.fromkeys(f"{w.category.__name__}: {one_line(str(w.message))}" for w in caught):
            err.print(f"warning: {text[:300]}", markup=False)
    return code


def _dispatch(command: Any, args: list[str], debug: bool, err: Any, usage_error: type, exit_error: type,
              abort_error: type) -> int:
    """Run the command; map every way it can end to an exit code and at most one line on stderr."""
    from advbench.core.signals import Interrupted

    try:
        # with standalone_mode=False click returns (not raises) the code of a typer.Exit raised by a command
        result = command.main(args=args, prog_name="advbench", standalone_mode=False)
    except exit_error as exc:
        return int(getattr(exc, "exit_code", 0) or 0)
    except abort_error:
        err.print("aborted")
        return 130
    except usage_error as exc:
        if type(exc).__name__ == "NoArgsIsHelpError":  # bare `advbench`: show the help
            sys.stdout.write(exc.format_message() + "\n")
            return 0
        if debug:
            raise
        where = f"advbench {exc.ctx.command_path.split(' ', 1)[1]} --help" if exc.ctx and " " in exc.ctx.command_path \
            else "advbench --help"
        err.print(f"error: {exc.format_message()} (see {where})", markup=False)
        return 2
    except UserError as exc:
        if debug:
            raise
        err.print(f"error: {one_line(str(exc))}", markup=False)
        return exc.exit_code
    except Interrupted as exc:
        where = f"; resume with: advbench train --resume {exc.run_dir}" if exc.run_dir else ""
        if os.environ.get("RANK", "0") == "0":  # under torchrun every rank stops; rank 0 says so
            err.print(f"interrupted: {exc}; state saved{where}", markup=False)
        return 130
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        return 130
    except OSError as exc:  # the environment refused (disk full, permissions, a vanished file): one line, exit 2
        if debug:
            raise
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        err.print(f"error: {one_line(exc.strerror or str(exc))}{where}", markup=False)
        return 2
    except Exception as exc:  # a defect in advbench: one line (the traceback with --debug), exit 1
        if debug:
            raise
        err.print(f"internal error: {type(exc).__name__}: {one_line(str(exc))[:300]} (a bug in advbench: rerun with "
                  "--debug for the traceback and report it)", markup=False)
        return 1
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


def entry() -> None:
    """Console-script entry point."""
    sys.exit(main())


def check_names(**given: str | None) -> None:
    """Fail fast, before torch loads: each given ``kind=name`` (defense, attack, model, dataset) must be registered
    (read from the source by :mod:`advbench.core.catalog`); the message suggests the closest names."""
    from advbench.core import catalog
    from advbench.registry import unknown_name_message

    for kind, name in given.items():
        if name is not None and not catalog.known(kind, name):
            raise UserError(unknown_name_message(kind, name, catalog.names(kind)))
