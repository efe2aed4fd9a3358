"""``python -m attentionflow`` (also ``accelerate launch -m attentionflow``)."""

import sys

from .cli import main

sys.exit(main())
