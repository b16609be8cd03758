"""``python -m ringbuffer``: the ``ringbuffer`` command line (see :mod:`ringbuffer.cli`)."""

from __future__ import annotations

import sys

from ringbuffer.cli import main

if __name__ == "__main__":
    sys.exit(main())
