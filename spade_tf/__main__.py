"""``python -m spade_tf``: the same as the ``spade-tf`` command."""

import sys

from spade_tf.cli import main

sys.exit(main())
