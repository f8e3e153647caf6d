"""The ``idleak`` command line: argument parsing and presentation only; the work is in ``idleak.jobs``."""

from __future__ import annotations

import functools
import signal
import sys
from collections.abc import Callable
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from idleak.errors import IdleakError

app = typer.Typer(
    name="idleak",
    help="Find real people inside synthetic face datasets. Run `idleak demo --out DIR` to see a full audit.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err = Console(stderr=True, highlight=False)
out = Console(highlight=False)

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
            err.print(f"[bold red]error:[/] {escape(str(exc))}", markup=True, soft_wrap=True)
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


def warn_excluded(excluded: dict[str, int], where: str) -> None:
    """The one-line warning count for images that could not be used."""
    if excluded:
        total = sum(excluded.values())
        parts = ", ".join(f"{reason}: {count}" for reason, count in excluded.items())
        err.print(f"warning: {total} image{'s' if total != 1 else ''} excluded ({parts}); see {where}")


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
