"""``python -m asyncstore._cli``: the same as the ``asyncstore`` command."""

from . import program

program()
