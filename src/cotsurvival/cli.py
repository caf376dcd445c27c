"""Command line: one command per stage, each mirroring a Python function one to one.

Every command that fails because of its input prints ``error[E0xx]: ...`` on one line and exits
with status 2; no traceback reaches the user.
"""
from __future__ import annotations

import sys

import click

from . import __version__
from .errors import CotSurvivalError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


@click.group(context_settings=CONTEXT)
@click.version_option(__version__, prog_name="cotsurvival")
def cli() -> None:
    """cotsurvival: greedy survival pruning of chains of thought, token taxonomy, statistics, reports."""


# ----------------------------------------------------------------------------- pruning (engine)
# ----------------------------------------------------------------------------- taxonomy
# ----------------------------------------------------------------------------- analysis
# ----------------------------------------------------------------------------- reports
# ----------------------------------------------------------------------------- generation
# ----------------------------------------------------------------------------- demo


def main(argv: list[str] | None = None) -> int:
    """Entry point: runs the CLI and turns known errors into one line and exit status 2."""
    try:
        cli.main(args=argv, prog_name="cotsurvival", standalone_mode=False)
    except CotSurvivalError as exc:
        click.echo(exc.one_line(), err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("interrupted; re-run the same command to resume", err=True)
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return 2
    except KeyboardInterrupt:
        click.echo("interrupted; re-run the same command to resume", err=True)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
