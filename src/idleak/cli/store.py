"""``idleak export`` and ``idleak upgrade-store``: embedding tables out of a store, old stores converted."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from idleak.cli import guard, out


def register(app: typer.Typer) -> None:
    @app.command("export")
    @guard
    def export_cmd(
        store: Annotated[Path, typer.Argument(help="Store made by `idleak embed`.")],
        table: Annotated[Path, typer.Option("--out", "-o", help="Parquet table to write (path, identity, face, box, vector).")],
        name: Annotated[str | None, typer.Option("--name", help="Dataset of the store to export (needed when it holds several).")] = None,
    ) -> None:
        """Write a store's embeddings as a Parquet table that SYN/REAL/HOLDOUT accept (or any other tool)."""
        from idleak.store import EmbeddingStore
        from idleak.store.tables import export_table

        n = export_table(EmbeddingStore.open(store), table, name)
        out.print(f"wrote {n} faces to {table.absolute()}", markup=False)

    @app.command("upgrade-store")
    @guard
    def upgrade_cmd(store: Annotated[Path, typer.Argument(help="A store made by an older idleak (format 1).")]) -> None:
        """Convert a format-1 store in place; its old parts are kept in STORE/parts.v1 (delete them after)."""
        from idleak.store.v1 import upgrade

        new = upgrade(store)
        out.print(f"upgraded {new.root}: {new.n_rows} rows, dataset 'default'; old parts in {new.root / 'parts.v1'}",
                  markup=False)
