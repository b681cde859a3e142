"""``meru workflow ARGS``: ``snakemake ARGS`` after reading every ``--configfile`` the way ``meru`` does.

Snakemake parses ``--configfile`` files in its own command line, before the Snakefile (and so any check of ours)
runs, and a YAML syntax error there reads ``WorkflowError: Config file is not valid JSON or YAML`` with no file or
line. This wrapper reads each config file first (:func:`meru.config.load_config_file`: strict YAML, its ``base:``
chain) and stops with one line naming the file, line and column; a config that reads hands every argument to
Snakemake unchanged (the Snakefile then runs the plan-time checks of :func:`meru.config.check_workflow_config`).
"""

from __future__ import annotations

import subprocess
import sys

from meru.arguments import add_workflow_arguments as add_arguments  # noqa: F401  (light: fast --help)
from meru.config import ConfigError, load_config_file

CONFIG_FLAGS = ("--configfile", "--configfiles")


def config_files(args: list[str]) -> list[str]:
    """The files named by ``--configfile(s) A [B ...]`` or ``--configfile(s)=A`` in a Snakemake command line."""
    files, taking = [], False
    for arg in args:
        flag, eq, value = arg.partition("=")
        if flag in CONFIG_FLAGS:
            taking = not eq
            files += [value] if eq else []
        elif taking and not arg.startswith("-"):
            files.append(arg)
        else:
            taking = False
    return files


def run(args) -> int:
    snakemake_args = args.passthrough
    try:
        for path in config_files(snakemake_args):
            load_config_file(path)
    except ConfigError as e:
        print(f"meru workflow: error: {e}", file=sys.stderr)
        return 2
    return subprocess.run([sys.executable, "-m", "snakemake", *snakemake_args]).returncode
