"""``python -m asyncstore``: the ``asyncstore`` command line (needs the ``cli`` extra)."""

from ._cli import program

program()
