"""The `crosscheck` command (console script, and `python -m crosscheck`).

SIGINT and SIGTERM end it with "interrupted" and exit code 130 from its first moment: also while
its modules import (numpy, pandas, rpy2: a second or more), before `interrupt.stoppable` takes over
for the command itself (`cli.fails_cleanly`)."""
import signal
import sys


def _interrupted(signum, frame) -> None:
    sys.stderr.write("interrupted\n")
    sys.exit(130)                                      # cli.EXIT_INTERRUPTED, not yet importable


def main():
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, _interrupted)
    from .cli import main as command
    return command()


if __name__ == "__main__":
    sys.exit(main())
