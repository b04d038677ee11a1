"""Embed the reviewers' task template in the CloudFormation template.

``AWS::SageMaker::HumanTaskUi`` takes the Liquid template inline (``UiTemplate.Content``), and
a template parameter cannot hold it (parameters are at most 4,096 bytes; the task template may
be up to 128,000 characters). So ``stream-router.yaml`` carries a marker where the content
goes, and this step writes a deployable copy with ``config/review-task.liquid.html`` in its
place, as one JSON-quoted (hence valid YAML) string:

    python deploy/aws/package.py --output build/stream-router.packaged.yaml

Only the standard library is used, so it runs wherever the AWS CLI does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
MARKER = '"@review-task.liquid.html@"'
MAX_TEMPLATE_CHARS = 128_000
DEFAULT_TEMPLATE = HERE / "stream-router.yaml"
DEFAULT_TASK = HERE.parents[1] / "config" / "review-task.liquid.html"


def package(template: str, task_html: str) -> str:
    """``template`` with its one marker replaced by ``task_html``."""
    if template.count(MARKER) != 1:
        raise ValueError(
            f"expected the marker {MARKER} exactly once in the CloudFormation template, found "
            f"{template.count(MARKER)}; is it already packaged?"
        )
    if not task_html.strip():
        raise ValueError("the task template is empty; give the Liquid HTML file with --task")
    if len(task_html) > MAX_TEMPLATE_CHARS:
        raise ValueError(
            f"the task template has {len(task_html)} characters; A2I takes at most "
            f"{MAX_TEMPLATE_CHARS}: shorten it"
        )
    return template.replace(MARKER, json.dumps(task_html))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--template", type=Path, default=DEFAULT_TEMPLATE)
    parser.add_argument("--task", type=Path, default=DEFAULT_TASK)
    parser.add_argument("--output", type=Path, required=True)
    args = parser.parse_args(argv)
    try:
        packaged = package(
            args.template.read_text(encoding="utf-8"), args.task.read_text(encoding="utf-8")
        )
    except (OSError, ValueError) as exc:
        print(f"package: {exc}", file=sys.stderr)
        return 2
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(packaged, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
