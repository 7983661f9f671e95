"""The work of each ``agekit`` command, one module per group of commands: :mod:`.train`,
:mod:`.images` (the commands that draw with a trained model), :mod:`.evaluate`, :mod:`.listing`;
:mod:`.errors` turns an exception into the one line a user sees. :mod:`agekit.cli` builds the
parser and dispatches. Nothing here imports torch at its top (``agekit --help`` stays fast).
"""
