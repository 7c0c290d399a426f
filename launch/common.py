"""What the launch scripts share: running (or, with --dry-run, printing) shell commands."""

from __future__ import annotations

import shlex
import subprocess
import sys
from typing import Sequence


def quote(command: Sequence[str] | str) -> str:
    return command if isinstance(command, str) else shlex.join(command)


def run(commands: Sequence[Sequence[str] | str], dry_run: bool) -> None:
    """Runs each command in turn, stopping at the first failure; --dry-run prints them, one
    per line, exactly as they would run."""
    for command in commands:
        print(f"$ {quote(command)}", flush=True)
        if dry_run:
            continue
        returncode = subprocess.call(command, shell=isinstance(command, str))
        if returncode:
            sys.exit(f"command failed (exit {returncode}): {quote(command)}")


def train_command(config: str, workdir: str, extra: Sequence[str]) -> list[str]:
    return ["textgen-jax", "train", f"--config={config}", f"--workdir={workdir}", *extra]
