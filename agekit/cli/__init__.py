"""The ``agekit`` command line: the parser and ``main`` (:mod:`.parser`), one module per group
of commands, and the error handling (:mod:`.errors`). Nothing here imports torch at its top, so
``agekit --help`` answers at once."""

from agekit.cli.parser import build_parser, main

__all__ = ["build_parser", "main"]
