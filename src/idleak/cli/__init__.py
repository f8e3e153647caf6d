"""The ``idleak`` command line: argument parsing and presentation only; the work is in ``idleak.jobs``."""

from __future__ import annotations

import functools
import os
import signal
import sys
from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text

from idleak.errors import IdleakError

app = typer.Typer(
    name="idleak",
    help="Find real people inside synthetic face datasets. Run `idleak demo --out DIR` to see a full audit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
#: user-controlled strings (paths, identities, file names) are printed literally: no markup, no highlighting;
#: styles are applied with ``styled`` only.
err = Console(stderr=True, highlight=False, markup=False)
out = Console(highlight=False, markup=False)

#: Command modules; each defines ``register(app)``.
COMMAND_MODULES = ("idleak.cli.core", "idleak.cli.mia", "idleak.cli.invert", "idleak.cli.release", "idleak.cli.store")


def terminate_as_interrupt() -> None:
    """SIGTERM unwinds like Ctrl-C, so what a command has computed (buffered embeddings, review verdicts)
    is flushed before it exits."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def guard(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Every command: SIGTERM as an interrupt; ``IdleakError`` (bad input) as a one-line message and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        terminate_as_interrupt()
        try:
            return fn(*args, **kwargs)
        except IdleakError as exc:
            err.print(styled(("error:", "bold red"), " ", str(exc)), soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("interrupted: what was embedded so far is kept in the store; rerun to resume")
            raise typer.Exit(130) from None

    return wrapper


class RichProgress:
    """A progress factory for the API: ``factory(label)`` returns ``callback(done, total)``."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.progress = Progress(TextColumn("{task.description:<20}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TimeRemainingColumn(), console=err, transient=False)

    def __enter__(self) -> RichProgress:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def __call__(self, label: str) -> Callable[[int, int], None]:
        task = self.progress.add_task(label, total=None)

        def update(done: int, total: int) -> None:
            self.progress.update(task, completed=done, total=max(total, 1) if total else 1)
            if total == 0:
                self.progress.update(task, completed=1)

        return update


def styled(*parts: str | tuple[str, str]) -> Text:
    """Text from plain strings and (string, style) pairs; nothing in them is read as markup."""
    return Text.assemble(*parts)


def headline(verdict: str, text: str, colour: str) -> None:
    """``VERDICT: text`` with the verdict in bold ``colour``."""
    out.print(styled((verdict.replace("_", " ").upper(), f"bold {colour}"), ": ", text))


def print_warnings(warnings: list[str] | None) -> None:
    for warning in warnings or []:
        err.print(styled(("warning:", "yellow"), " ", warning))


def warn_excluded(excluded: dict[str, int], where: str | os.PathLike[str]) -> None:
    """The one-line warning count for images that could not be used; ``where`` (a file) is named only
    if it exists."""
    if excluded:
        total = sum(excluded.values())
        parts = ", ".join(f"{reason}: {count}" for reason, count in excluded.items())
        see = f"; see {where}" if not isinstance(where, os.PathLike) or os.path.exists(where) else ""
        err.print(f"warning: {total} image{'s' if total != 1 else ''} excluded ({parts}){see}")


def version_callback(value: bool) -> None:
    if value:
        from idleak import __version__

        out.print(f"idleak {__version__}")
        raise typer.Exit()


@app.callback()
def main_options(
    version: Annotated[bool, typer.Option("--version", callback=version_callback, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    """Find real people inside synthetic face datasets."""


def _register_all() -> None:
    import importlib

    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        module.register(app)


_register_all()


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
