"""``stream-router template preview`` and ``template check``: A2I worker templates, locally.

A2I worker templates are Liquid HTML with crowd elements that AWS hosts, so until now the only
way to look at one was the AWS console, and the only way to learn whether a changed template
still produces the answer the router reads (``review.answer_path``) was production.

- ``template preview TEMPLATE --input sample.json`` renders the template with the sample as
  ``task.input``, the way A2I does (``template.py``), and writes one self-contained HTML file:
  the crowd elements' script (``static/crowd-html-elements.js``) inlined, nothing fetched from
  the network. Opened in a browser, the form works; Submit shows the ``answerContent`` A2I would
  store, instead of sending it anywhere.
- ``template check TEMPLATE`` reports what CreateHumanTaskUi would refuse (exit 1), likely
  mistakes (warnings), and the answer paths the template produces; with ``--answer-path`` or
  ``--config`` (a router configuration, for its ``review.answer_path``) it says whether the
  router will find its label there (exit 1 when not).

The sandbox extra (python-liquid) is imported only when a subcommand runs, so the parser can be
built where only the runtime is installed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_parser(commands: Any) -> None:
    """The ``template`` command and its subcommands, on ``stream-router``'s parser."""
    template = commands.add_parser("template", help="A2I worker templates: preview and check")
    template_commands = template.add_subparsers(dest="template_command", required=True)
    preview = template_commands.add_parser(
        "preview", help="render a worker template with a sample input to a local HTML file"
    )
    preview.add_argument("template", type=Path, help="the worker template (Liquid HTML)")
    preview.add_argument(
        "--input", type=Path, help="sample InputContent (a JSON object): task.input"
    )
    preview.add_argument(
        "--output", type=Path, help="HTML file to write (default: TEMPLATE with .preview.html)"
    )
    preview.set_defaults(handler=_preview)
    checking = template_commands.add_parser(
        "check", help="what A2I would refuse, and the answer paths the template produces"
    )
    checking.add_argument("template", type=Path, help="the worker template (Liquid HTML)")
    checking.add_argument("--input", type=Path, help="sample InputContent to render with")
    target = checking.add_mutually_exclusive_group()
    target.add_argument("--answer-path", help="the router's review.answer_path to look for")
    target.add_argument("--config", type=Path, help="router configuration (review.answer_path)")
    checking.set_defaults(handler=_check)


def _read_input(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise SystemExit(f"stream-router: {path}: the input must be a JSON object (task.input)")
    return data


def preview_html(template: str, task_input: dict[str, Any], title: str) -> str:
    """A self-contained page: the rendered template with the crowd elements' script inlined."""
    from stream_router.sandbox.a2i.portal import AWS_SCRIPT, STATIC, page  # noqa: PLC0415
    from stream_router.sandbox.a2i.template import render  # noqa: PLC0415

    rendered = AWS_SCRIPT.sub("", render(template, task_input))
    script = (STATIC / "crowd-html-elements.js").read_text(encoding="utf-8")
    script = script.replace("</script", "<\\/script")
    return page(title, rendered, f"<script>{script}</script>")


def _preview(args: argparse.Namespace) -> int:
    from stream_router.sandbox.a2i.template import TemplateError  # noqa: PLC0415

    template = args.template.read_text(encoding="utf-8")
    output = args.output or args.template.with_suffix(".preview.html")
    try:
        html = preview_html(template, _read_input(args.input), f"Preview: {args.template.name}")
    except TemplateError as exc:
        print(f"stream-router: {args.template}: {exc}")
        return 1
    output.write_text(html, encoding="utf-8")
    print(f"wrote {output}: open it in a browser; Submit shows the answer A2I would store")
    return 0


def _answer_path(args: argparse.Namespace) -> str | None:
    if args.answer_path:
        return str(args.answer_path)
    if args.config:
        from stream_router.settings import load_settings  # noqa: PLC0415

        return load_settings(args.config).review.answer_path
    return None


def _check(args: argparse.Namespace) -> int:
    from stream_router.sandbox.a2i.template import check  # noqa: PLC0415

    template = args.template.read_text(encoding="utf-8")
    wanted = _answer_path(args)  # a broken --config stops here, before any report
    report = check(template, _read_input(args.input))
    for error in report.errors:
        print(f"error: {error}")
    for warning in report.warnings:
        print(f"warning: {warning}")
    if report.answer_paths:
        print("answer paths (review.answer_path can be one of these):")
        for path in report.answer_paths:
            print(f"  {path}")
    else:
        print("answer paths: none (no named crowd element)")
    failed = bool(report.errors)
    if wanted is not None:
        if wanted in report.answer_paths:
            print(f"review.answer_path {wanted}: produced by this template")
        else:
            print(f"review.answer_path {wanted}: NOT produced by this template")
            failed = True
    if not report.errors:
        print("A2I would accept this template" + (" (see warnings)" if report.warnings else ""))
    return 1 if failed else 0
