"""``python -m attentionflow`` and the ``attentionflow`` command (also ``accelerate launch -m attentionflow``).

Ctrl-C and SIGTERM are handled before anything heavy is imported: during the imports they end the process at once
with 130 / 143 and one line; afterwards :func:`attentionflow.commands.cli.main` turns them into a clean stop.
"""

import os
import signal
import sys


def _stop_early(signum: int, frame: object) -> None:
    sys.stderr.write("attentionflow: interrupted before it started\n")
    sys.stderr.flush()
    os._exit(128 + signum)  # nothing is written yet: no traceback, 130 (SIGINT) / 143 (SIGTERM)


def entry() -> int:
    """Install the early signal handlers, then import and run the command line."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _stop_early)
    from attentionflow.commands.cli import main

    code = main()
    if code in (130, 143):  # stopped by a signal, outputs cleaned up: leave now, so that a second signal during
        sys.stdout.flush()  # the interpreter's shutdown (which restores the default, killing handler) cannot turn
        sys.stderr.flush()  # 130 / 143 into -2 / -15
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(entry())
