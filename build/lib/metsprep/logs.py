"""Logging for stage scripts: everything a stage says goes to its Snakemake log file."""

import logging
import sys
from pathlib import Path


def start_log(log_path: str | Path) -> logging.Logger:
    """Send stderr and the `metsprep` logger to `log_path` (the rule's `log:` file)."""
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    stream = open(log_path, "w", buffering=1)  # noqa: SIM115 - lives as long as the job
    sys.stderr = stream
    logging.basicConfig(
        stream=stream,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    return logging.getLogger("metsprep")
