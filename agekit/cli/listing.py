"""``agekit list``: the registered components and their status."""

from __future__ import annotations

import argparse
import sys

from rich.markup import escape
from rich.table import Table

from agekit.cli.shared import console


def cmd_list(args: argparse.Namespace) -> int:
    from agekit.registry import REGISTRY

    # Names and distributions come from package metadata; importing every component (torch and
    # each plugin) to learn whether it loads takes seconds, so only --check does it.
    entries = REGISTRY.check(args.kind) if args.check else REGISTRY.entries(args.kind)
    columns = ("name", "kind", "distribution", "version", "status")
    rows = [
        (entry.name, entry.kind, entry.distribution, entry.version, " ".join(entry.status.split()))
        for entry in entries
    ]
    widths = [
        max([len(column)] + [len(row[i]) for row in rows]) for i, column in enumerate(columns)
    ]
    # A table needs its borders and padding (3 characters a column, plus 1) and the status header.
    table_width = sum(widths[:-1]) + len(columns[-1]) + 3 * len(columns) + 1
    if args.plain or not console.is_terminal or table_width > console.width:
        # Pipes, files and narrow terminals get every value in full, one aligned row each.
        for row in [columns, *rows]:
            cells = [value.ljust(width) for value, width in zip(row[:-1], widths, strict=False)]
            sys.stdout.write("  ".join([*cells, row[-1]]) + "\n")
        return 0
    table = Table(title="agekit components")
    for column, width in zip(columns[:-1], widths, strict=False):
        table.add_column(column, no_wrap=True, min_width=width)
    table.add_column(columns[-1], overflow="fold")  # a long "broken: ..." folds, never cut
    for row in rows:
        style = "red" if row[-1].startswith("broken") else "green"
        table.add_row(
            *(escape(value) for value in row[:-1]), f"[{style}]{escape(row[-1])}[/{style}]"
        )
    console.print(table)
    return 0
