"""The jobs: thin command-line entry points, each a file `ray job submit` runs (``python
jobs/render.py ...``) and an installed command (``videomv-render ...``, ``[project.scripts]`` in
pyproject.toml). Nothing imports them but those commands."""
