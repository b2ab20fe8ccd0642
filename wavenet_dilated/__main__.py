"""``python -m wavenet_dilated …`` runs the ``wavenet-dilated`` command line (see :mod:`wavenet_dilated.cli`)."""

import sys

from .cli import cli

if __name__ == "__main__":
    sys.exit(cli())
