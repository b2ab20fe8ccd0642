"""``python -m wavenet_dilated …`` runs the ``wavenet-dilated`` command line (see :mod:`wavenet_dilated.cli`)."""

import sys

from .cli.main import cli

if __name__ == "__main__":
    sys.exit(cli())
