"""``python -m nemo_ref``: the ``nemo-ref`` command, also as torchrun starts it on every rank::

torchrun --nproc-per-node 2 -m nemo_ref generate "Hello" --checkpoint DIR
"""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
