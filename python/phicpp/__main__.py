"""The `phicpp` command and `python -m phicpp ...`: the command line (phicpp.cli).

Loading it (click, then each command's modules) takes a moment; a Ctrl-C in that moment
ends the command with status 130 and no traceback, as it does once a command runs."""
import sys


def main() -> None:
    try:
        from .cli import main as command_line
    except KeyboardInterrupt:
        sys.exit(130)
    command_line()


if __name__ == "__main__":
    main()
