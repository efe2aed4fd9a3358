"""``python -m attentionflow`` and the ``attentionflow`` command (also ``accelerate launch -m attentionflow``).

Ctrl-C and SIGTERM are handled before anything heavy is imported: during the imports they end the process at once
with 130 / 143 and one line; afterwards :func:`attentionflow.cli.main` turns them into a clean stop.
"""

import signal
import sys


def _stop_early(signum: int, frame: object) -> None:
    sys.stderr.write("attentionflow: interrupted before it started\n")
    sys.exit(128 + signum)  # SystemExit: no traceback, 130 (SIGINT) / 143 (SIGTERM)


def entry() -> int:
    """Install the early signal handlers, then import and run the command line."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop_early)
    from .cli import main

    return main()


if __name__ == "__main__":
    sys.exit(entry())
