"""``python -m nemo_ref.cli``: the ``nemo-ref`` command."""

import sys

from . import main

if __name__ == "__main__":
    sys.exit(main())
