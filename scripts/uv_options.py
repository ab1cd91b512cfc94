"""pip's configuration as uv's command-line options (scripts/setup.sh installs with uv).

uv does not read pip's configuration files or ``PIP_*`` variables, so a machine that points pip at
a mirror, local wheels, a constraints file or a certificate would otherwise install from elsewhere
(or not at all). This reads what ``pip config list`` reports and writes the uv options that mean
the same, NUL-separated on stdout, for ``setup.sh`` to read into an array (run it with the venv's
Python: pip's configuration is the one that venv's pip reads)::

    .venv/bin/python scripts/uv_options.py        # the options
    .venv/bin/python scripts/uv_options.py --env  # the environment variables, NAME=value lines

pip's ``index-url`` -> ``--default-index``, ``extra-index-url`` -> ``--extra-index-url``,
``find-links`` -> ``--find-links``, ``constraint`` -> ``--constraint``, ``trusted-host`` ->
``--allow-insecure-host``, ``no-index`` -> ``--no-index``; and always ``--index-strategy
unsafe-best-match``, pip's own rule (the best version over every index, where uv by default stops
at the first index that has the package). ``cert`` and ``timeout`` are environment variables for
uv (``SSL_CERT_FILE``, ``UV_HTTP_TIMEOUT``), which ``--env`` prints.
Other keys do not change what is installed and are left out.
"""

from __future__ import annotations

import ast
import subprocess
import sys

# pip's key -> uv's option; each value of a list-valued key is one option.
OPTIONS = {"index-url": "--default-index", "extra-index-url": "--extra-index-url", "find-links": "--find-links",
           "constraint": "--constraint", "trusted-host": "--allow-insecure-host"}
ENVIRONMENT = {"cert": "SSL_CERT_FILE", "timeout": "UV_HTTP_TIMEOUT"}
ALIASES = {"default-timeout": "timeout"}  # pip's two names of one option (--timeout, --default-timeout)


def pip_settings(listing: str) -> dict[str, str]:
    """``pip config list`` output (``section.key='value'`` lines, the files in pip's loading order,
    then ``:env:`` for ``PIP_*`` variables) -> {key: value}, a later line winning as it does in pip."""
    settings: dict[str, str] = {}
    for line in listing.splitlines():
        name, _, value = line.partition("=")
        if not value:
            continue
        key = name.rpartition(".")[2]
        key = ALIASES.get(key, key)
        settings[key] = ast.literal_eval(value) if value[:1] in "'\"" else value
    return settings


def uv_options(settings: dict[str, str]) -> list[str]:
    """The uv options for pip's ``settings`` (``pip_settings``)."""
    options = ["--index-strategy", "unsafe-best-match"]
    for key, option in OPTIONS.items():
        for value in settings.get(key, "").split():
            options += [option, value]
    if settings.get("no-index", "").lower() in ("1", "true", "yes", "on"):
        options.append("--no-index")
    return options


def uv_environment(settings: dict[str, str]) -> dict[str, str]:
    """The environment variables uv reads for pip's ``cert`` and timeout settings."""
    return {variable: settings[key] for key, variable in ENVIRONMENT.items() if settings.get(key)}


def main(argv: list[str]) -> None:
    listing = subprocess.run([sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True,
                             check=True).stdout
    settings = pip_settings(listing)
    if "--env" in argv:
        sys.stdout.write("".join(f"{name}={value}\n" for name, value in uv_environment(settings).items()))
    else:
        sys.stdout.write("".join(f"{option}\0" for option in uv_options(settings)))


if __name__ == "__main__":
    main(sys.argv[1:])
