"""`keras-regkit docs`: serves or builds the documentation site.

The site's sources (`mkdocs.yml` and `docs/`) live in a checkout of the
repository, not in the installed package: run it from the checkout, or
from an editable install of it (`pip install -e ".[docs]"`). It runs
MkDocs itself, `mkdocs serve` (a live preview at http://127.0.0.1:8000,
rebuilt as the files change) or `mkdocs build --strict`.
"""

import argparse
import importlib.util
import pathlib
import subprocess
import sys

CONFIG = "mkdocs.yml"


def find_config(start=None):
    """The `mkdocs.yml` of a keras-regkit checkout, or None.

    Looked for in `start` (by default the working directory) and its
    parents, then beside the imported package (an editable install).
    """
    start = pathlib.Path.cwd() if start is None else pathlib.Path(start)
    package_root = pathlib.Path(__file__).resolve().parent.parent
    for folder in (start, *start.parents, package_root):
        config = folder / CONFIG
        if config.is_file() and (folder / "keras_regkit").is_dir():
            return config
    return None


def main(argv=None):
    """`keras-regkit docs [--build] [--site-dir DIR] [--dev-addr HOST:PORT]`."""
    parser = argparse.ArgumentParser(
        prog="keras-regkit docs", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--build",
        action="store_true",
        help="build the site once (`mkdocs build --strict`) instead of "
        "serving a live preview",
    )
    parser.add_argument(
        "--site-dir", help="with --build, where to write it (default: site)"
    )
    parser.add_argument(
        "--dev-addr",
        default="127.0.0.1:8000",
        help="where the preview listens (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    missing = [
        name
        for name in ("mkdocs", "material", "mkdocstrings")
        if importlib.util.find_spec(name) is None
    ]
    if missing:
        parser.exit(
            2,
            f"keras-regkit docs needs {', '.join(missing)}: "
            'pip install "keras-regkit[docs]"\n',
        )
    config = find_config()
    if config is None:
        parser.exit(
            2,
            "keras-regkit docs needs the site's sources, mkdocs.yml and "
            "docs/, which come with a checkout of the repository, not with "
            "the installed package: run it in the checkout.\n",
        )
    command = [sys.executable, "-m", "mkdocs"]
    if args.build:
        command += ["build", "--strict", "--config-file", str(config)]
        if args.site_dir:
            site = pathlib.Path(args.site_dir).resolve()
            command += ["--site-dir", str(site)]
    else:
        command += [
            "serve",
            "--config-file",
            str(config),
            "--dev-addr",
            args.dev_addr,
        ]
    return subprocess.call(command, cwd=config.parent)
