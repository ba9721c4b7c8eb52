"""The command line: parse options, call one library function, show its result.

Library errors (:mod:`cnn_tune.errors`) and bad options are turned into one line on stderr
here, and nowhere else; ``cnn-tune --debug …`` (or ``CNN_TUNE_DEBUG=1``) shows the traceback
instead. Heavy modules (torch) are imported inside the commands, so ``--help`` stays fast."""

from __future__ import annotations

import importlib
import os
import sys
from typing import Annotated, Any, Sequence

import typer
from typer.core import TyperGroup

from cnn_tune import __version__
from cnn_tune.cli.options import DEBUG_ENV
from cnn_tune.errors import CnnTuneError
from cnn_tune.storage.engine import close_all
from cnn_tune.storage.faults import quiet_libraries, quiet_optuna, storage_cause, storage_failure

# Typer may bundle its own copy of click; take the exception classes from wherever it does.
_click_exceptions = importlib.import_module(typer.BadParameter.__module__)


def debug_requested(args: Sequence[str]) -> bool:
    """``--debug`` among the options before the command name, or ``CNN_TUNE_DEBUG`` set."""
    before_command = []
    for arg in args:
        if not arg.startswith("-"):
            break
        before_command.append(arg)
    return "--debug" in before_command or os.environ.get(DEBUG_ENV, "") not in ("", "0")


class OneLineErrors(TyperGroup):
    """Every failure is one line on stderr and an exit code: 2 usage, 1 runtime, 130 Ctrl-C."""

    def main(
        self,
        args: Any = None,
        prog_name: Any = None,
        complete_var: Any = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        args = list(sys.argv[1:] if args is None else args)
        debug = debug_requested(args)
        try:
            with quiet_libraries(debug):
                rv = super().main(args, "cnn-tune", complete_var, standalone_mode=False, **extra)
        except _click_exceptions.NoArgsIsHelpError:  # bare `cnn-tune`: help was printed already
            sys.exit(0)
        except _click_exceptions.UsageError as exc:
            command = exc.ctx.command_path if exc.ctx else "cnn-tune"
            typer.echo(f"Error: {exc.format_message()} (see: {command} --help)", err=True)
            sys.exit(2)
        except _click_exceptions.ClickException as exc:
            typer.echo(f"Error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except CnnTuneError as exc:
            if debug:
                raise
            typer.echo(f"Error: {exc.one_line()}", err=True)
            sys.exit(exc.exit_code)
        except (typer.Abort, KeyboardInterrupt):
            typer.echo("Interrupted.", err=True)
            sys.exit(130)
        except Exception as exc:  # a storage fault deep in Optuna, or a bug: still one line unless --debug
            if debug:
                raise
            if storage_cause(exc) is not None:
                failure = storage_failure(exc)
                typer.echo(f"Error: {failure.one_line()}", err=True)
                sys.exit(failure.exit_code)
            typer.echo(
                f"Error: unexpected {type(exc).__name__}: {exc} (run again with --debug for the traceback)", err=True
            )
            sys.exit(1)
        finally:
            close_all()
        sys.exit(rv if isinstance(rv, int) else 0)


app = typer.Typer(
    cls=OneLineErrors,
    help="Tune a PyTorch CNN on MNIST, Fashion-MNIST or your images with Optuna; every study lives in one database.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"cnn-tune {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks instead of one-line errors.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    quiet_optuna(debug or debug_requested([]))
