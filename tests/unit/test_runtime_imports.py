"""The runtime image has no analysis extra (numpy, scipy, matplotlib): the roles and every
command but ``policies backtest`` must run without them, and that one must say what is missing.
"""

from __future__ import annotations

import subprocess
import sys

CHECK = """
import sys
import stream_router.app, stream_router.cli, stream_router.review_role, stream_router.ingest.loop
from stream_router.cli import build_parser
build_parser()
heavy = sorted(name for name in ("numpy", "scipy", "matplotlib", "liquid") if name in sys.modules)
assert not heavy, heavy
"""

WITHOUT = """
import sys
for name in ("numpy", "scipy", "matplotlib"):
    sys.modules[name] = None  # an import of it now fails, as where it is not installed
from stream_router.cli import main
sys.exit(main(["policies", "backtest", "--input", "history.jsonl"]))
"""


def test_the_roles_and_the_cli_import_no_analysis_package() -> None:
    done = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, check=False)
    assert done.returncode == 0, done.stderr.decode()


def test_backtest_without_the_analysis_extra_says_what_to_install() -> None:
    done = subprocess.run([sys.executable, "-c", WITHOUT], capture_output=True, check=False)
    assert done.returncode == 2, done.stderr.decode()
    assert "pip install 'stream-router[analysis]'" in done.stderr.decode()
