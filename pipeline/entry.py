"""What every script shares (``jobs/*.py``, ``benchmarks/*.py``, ``scripts/*.py``): its preamble, its
parser and, for the jobs, one way out.

A script's preamble is these two lines, before any other import of the project
(``tests/test_layout.py`` checks that every script has them):

    sys.path[0] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    from pipeline.entry import job_parser, run_job  # noqa: E402  (logging first)

The first puts the project, not the script's folder, first on the path: the checkout submitted with
``ray job submit --working-dir .`` wins over an installed copy, and Ray hands the driver's
``sys.path[0]`` to its workers. No shared module can do that for the script: it is what finds the
shared module. Importing this module then sets up logging (``pipeline.logs``) before Ray, tqdm and
the model libraries are imported, because they read what it sets when they load.

Exit codes of a job run by ``run_job``: 0 done; 2 bad input, with one line naming it (argparse's own
errors are 2 as well); 1 a failure outside the job that one line explains (a full disk, whatever
wrapped it on the way: Ray, a worker; a tracking store that cannot be opened). Anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any, Callable

from pipeline.logs import configure_logging

configure_logging()  # first: sets what Ray, tqdm and the model libraries read at import

from pipeline.cli import add_config_arguments  # noqa: E402
from pipeline.disk import log_if_disk_full  # noqa: E402
from pipeline.tracking import TrackingError  # noqa: E402

# The project's input errors derive from these two (ModelDirectoryError, SourceError,
# SubmittedPathError, CheckpointConversionError, ModelLocationError, ...).
BAD_INPUT = (ValueError, FileNotFoundError)
BAD_INPUT_EXIT, FAILED_EXIT = 2, 1


def job_parser(doc: str | None, *configs: type | tuple[type, dict[str, Any]]) -> argparse.ArgumentParser:
    """A parser whose description is the script's docstring and whose flags are the fields of
    ``configs``: each a config dataclass, or ``(dataclass, add_config_arguments' options)``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for config in configs:
        config_cls, options = config if isinstance(config, tuple) else (config, {})
        add_config_arguments(parser, config_cls, **options)
    return parser


def run_job(work: Callable[[], int | None], logger: logging.Logger) -> int:
    """Run a job's ``work`` and return its exit code (``work``'s own, or 0 when it returns None),
    turning the errors a user can act on into one line on ``logger`` (see the module's exit codes).
    ``work`` returning anything else is a bug (``sys.exit`` would print it and exit 1): TypeError."""
    try:
        code = work()
        if code is not None and (not isinstance(code, int) or isinstance(code, bool)):
            raise TypeError(f"a job's work returns an exit code or None, not {type(code).__name__}")
    except BAD_INPUT as error:
        logger.error("%s", error)
        return BAD_INPUT_EXIT
    except TrackingError as error:
        logger.error("%s", error)
        return FAILED_EXIT
    except Exception as error:
        if not log_if_disk_full(error, logger):
            raise
        return FAILED_EXIT
    return 0 if code is None else code
