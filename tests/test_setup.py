"""scripts/setup.sh installs with uv, which reads none of pip's configuration: scripts/uv_options.py
hands it pip's (a mirror, local wheels, constraints, a certificate), or the install would go elsewhere."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO_ROOT, load_script

SCRIPT = REPO_ROOT / "scripts" / "uv_options.py"
uv_options = load_script(SCRIPT, "uv_options")

LISTING = """\
global.cert='/etc/ssl/certs/ca-certificates.crt'
global.extra-index-url='file:///opt/pypi/simple file:///opt/mirror/simple'
global.find-links='/opt/wheels'
global.constraint='/etc/xdg/pip/constraints.txt'
install.trusted-host='mirror.internal'
:env:.find-links='/srv/wheels /srv/more-wheels'
:env:.default-timeout='180'
:env:.index-url='https://mirror.internal/simple'
"""


def test_pips_settings_become_uvs_options_a_later_source_winning_as_in_pip():
    settings = uv_options.pip_settings(LISTING)
    assert settings["find-links"] == "/srv/wheels /srv/more-wheels"  # PIP_FIND_LINKS over the file, as in pip
    options = uv_options.uv_options(settings)
    pairs = list(zip(options[::2], options[1::2]))
    assert pairs == [("--index-strategy", "unsafe-best-match"),  # pip's rule: the best version of every index
                     ("--default-index", "https://mirror.internal/simple"),
                     ("--extra-index-url", "file:///opt/pypi/simple"), ("--extra-index-url", "file:///opt/mirror/simple"),
                     ("--find-links", "/srv/wheels"), ("--find-links", "/srv/more-wheels"),
                     ("--constraint", "/etc/xdg/pip/constraints.txt"),
                     ("--allow-insecure-host", "mirror.internal")]
    assert uv_options.uv_environment(settings) == {"SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
                                                   "UV_HTTP_TIMEOUT": "180"}


def test_no_configuration_is_pips_defaults_and_no_index_is_kept():
    assert uv_options.uv_options({}) == ["--index-strategy", "unsafe-best-match"]
    assert uv_options.uv_environment({}) == {}
    assert uv_options.uv_options(uv_options.pip_settings("global.no-index='true'\n"))[-1] == "--no-index"


def test_the_script_reads_the_configuration_pip_reads(tmp_path):
    config = tmp_path / "pip.conf"
    config.write_text("[global]\nextra-index-url = file:///srv/our-mirror/simple\n")
    env = {**os.environ, "PIP_CONFIG_FILE": str(config), "PIP_FIND_LINKS": "/srv/our-wheels", "PIP_TIMEOUT": "42"}
    options = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, check=True).stdout
    assert options.endswith("\0")
    options = options.split("\0")[:-1]
    assert options[:2] == ["--index-strategy", "unsafe-best-match"]
    assert ["--extra-index-url", "file:///srv/our-mirror/simple"] == options[options.index("--extra-index-url"):][:2]
    assert options[options.index("--find-links") + 1] == "/srv/our-wheels"
    environment = subprocess.run([sys.executable, str(SCRIPT), "--env"], env=env, capture_output=True, text=True,
                                 check=True).stdout
    assert "UV_HTTP_TIMEOUT=42\n" in environment
