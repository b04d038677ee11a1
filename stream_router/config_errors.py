"""Configuration mistakes explained: which key, where it came from, and the fix.

A user meets these before anything runs, so each one is a line naming the setting's path (and
the environment variable when the value came from one), with a suggestion where one exists:
the nearest known key for a typo, the JSON form for a list or mapping given as plain text in
an environment variable.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

ENV_PREFIX = "STREAM_ROUTER_"  #: of every setting's environment variable
_COMPLEX = (list, tuple, set, frozenset, dict)
_URL_PASSWORD = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://[^/?#@:]*):[^/?#@]*@")
MASK = "**********"


def mask_url_passwords(data: Any) -> Any:
    """``data`` with the password of every URL's userinfo masked (``http://u:**********@h``)."""
    if isinstance(data, str):
        return _URL_PASSWORD.sub(rf"\1:{MASK}@", data)
    if isinstance(data, dict):
        return {key: mask_url_passwords(value) for key, value in data.items()}
    if isinstance(data, list):
        return [mask_url_passwords(value) for value in data]
    return data


def yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what, without the offending line (it may hold a secret)."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem_mark is None:
        return exc.__class__.__name__
    mark = exc.problem_mark
    text = f"line {mark.line + 1}, column {mark.column + 1}: {exc.problem}"
    if exc.context and exc.context_mark is not None:
        where = exc.context_mark
        text += f" ({exc.context} at line {where.line + 1}, column {where.column + 1})"
    return text


def env_name(location: Sequence[str | int]) -> str:
    """The environment variable of a setting's path (``ingest.input_topics`` →
    ``STREAM_ROUTER_INGEST__INPUT_TOPICS``)."""
    return ENV_PREFIX + "__".join(str(part) for part in location).upper()


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (through Optional, list, dict values)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found.extend(_models_in(arg))
    return found


def _field_annotation(root: type[BaseModel], location: Sequence[str | int]) -> Any:
    """The annotation of the field at ``location`` (None when there is no such field)."""
    models: list[type[BaseModel]] = [root]
    annotation: Any = None
    for part in location:
        if isinstance(part, int) or (isinstance(part, str) and part.isdigit()):
            continue  # an index into a list of sections
        for model in models:
            field = model.model_fields.get(str(part))
            if field is not None:
                annotation = field.annotation
                models = _models_in(annotation)
                break
        else:
            if annotation is not None and typing.get_origin(annotation) is dict:
                args = typing.get_args(annotation)
                annotation = args[1] if len(args) == 2 else Any
                models = _models_in(annotation)
                continue
            return None
    return annotation


def _without_choice_tags(
    root: type[BaseModel], location: Sequence[str | int]
) -> tuple[str | int, ...]:
    """``location`` without the tags pydantic puts after a section chosen by name
    (``review.backend.label-studio.api_token`` is the setting ``review.backend.api_token``)."""
    kept: list[str | int] = []
    for part in location:
        if kept and isinstance(part, str) and part in _choice_tags(_field_annotation(root, kept)):
            continue
        kept.append(part)
    return tuple(kept)


def _choice_tags(annotation: Any) -> set[str]:
    """The ``name`` of each section of a union of named sections (empty for anything else)."""
    if typing.get_origin(annotation) not in (typing.Union, types.UnionType):
        return set()
    return {
        str(model.model_fields["name"].default)
        for model in _models_in(annotation)
        if "name" in model.model_fields
    }


def _chosen_section(
    root: type[BaseModel], location: Sequence[str | int]
) -> tuple[str, list[str], list[str]] | None:
    """For a key right below a section chosen by name (``location`` ends tag, key): the tag,
    the chosen section's keys, and the other choices that have the key."""
    if len(location) < 2 or not isinstance(location[-2], str):
        return None
    parent = _without_choice_tags(root, location[:-2])
    annotation = _field_annotation(root, parent)
    tag = location[-2]
    if tag not in _choice_tags(annotation):
        return None
    known: list[str] = []
    owners: list[str] = []
    for model in _models_in(annotation):
        name = str(model.model_fields["name"].default)
        if name == tag:
            known = list(model.model_fields)
        elif location[-1] in model.model_fields:
            owners.append(name)
    return tag, known, owners


def _known_keys(root: type[BaseModel], parent: Sequence[str | int]) -> list[str]:
    annotation: Any = root if not parent else _field_annotation(root, parent)
    keys: list[str] = []
    for model in _models_in(annotation):
        keys.extend(model.model_fields)
    return keys


def _is_complex(annotation: Any) -> bool:
    if annotation is None:
        return False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_complex(arg) for arg in typing.get_args(annotation) if arg is not None)
    return origin in _COMPLEX or annotation in _COMPLEX or bool(_models_in(annotation))


def _is_sequence(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_sequence(arg) for arg in typing.get_args(annotation))
    return origin in (list, tuple, set, frozenset) or annotation in (list, tuple, set, frozenset)


def _json_example(variable: str, value: str, annotation: Any) -> str:
    """``VARIABLE='<value as JSON>'``: a comma-separated value as a list, else a mapping's form."""
    if _is_sequence(annotation):
        items = [part.strip() for part in value.split(",") if part.strip()]
        return f"{variable}='{json.dumps(items)}'"
    return f"""{variable}='{{"key": "value"}}'"""


def describe_validation_error(
    exc: ValidationError, path: Path | None, root: type[BaseModel]
) -> str:
    """One line per problem: the setting's path, where the value came from, what to do."""
    where = f" in {path}" if path else ""
    lines = [f"invalid configuration{where}:"]
    for error in exc.errors():
        location = _without_choice_tags(root, error["loc"])
        dotted = ".".join(str(part) for part in location) or "(top level)"
        message = error["msg"]
        if error["type"] == "extra_forbidden" and location:
            message = "unknown setting"
            known = _known_keys(root, location[:-1])
            chosen = _chosen_section(root, error["loc"])
            if chosen is not None:  # a key of the one section chosen by name
                tag, known, owners = chosen
                if owners:
                    parent = ".".join(map(str, location[:-1]))
                    message = (
                        f"not a setting of {parent} {tag} but of {', '.join(owners)} "
                        f"({parent}.name chooses)"
                    )
                    known = []
            close = difflib.get_close_matches(str(location[-1]), known, n=1, cutoff=0.6)
            if close:
                suggestion = ".".join([*(str(p) for p in location[:-1]), close[0]])
                message += f"; did you mean {suggestion}?"
        variable = env_name(location)
        if variable in os.environ:
            message += f" (from the environment variable {variable})"
            if error["type"] in ("list_type", "dict_type", "model_type", "tuple_type", "set_type"):
                annotation = _field_annotation(root, location)
                message += "; it takes JSON, for example " + _json_example(
                    variable, os.environ[variable], annotation
                )
        lines.append(f"  {dotted}: {message}")
    return "\n".join(lines)


def describe_environment_error(root: type[BaseModel], environ: Mapping[str, str]) -> str:
    """Name the variable pydantic-settings could not decode, and its JSON form.

    Lists, mappings and sections come from the environment as JSON; a plain value there (such
    as ``STREAM_ROUTER_INGEST__INPUT_TOPICS=predictions``) fails before validation, and
    pydantic-settings' own error names only the top-level section.
    """
    for variable, value in sorted(environ.items()):
        if not variable.upper().startswith(ENV_PREFIX):
            continue
        location = variable[len(ENV_PREFIX) :].lower().split("__")
        annotation = _field_annotation(root, location)
        if not _is_complex(annotation):
            continue
        try:
            json.loads(value)
        except ValueError:
            pass
        else:
            continue
        kind = "a list" if _is_sequence(annotation) else "a mapping"
        return (
            f"{variable}: {'.'.join(location)} is {kind}, so the environment variable takes "
            f"JSON, for example {_json_example(variable, value, annotation)}"
        )
    return (
        "a STREAM_ROUTER_* environment variable of a list or mapping setting is not JSON "
        '(lists and maps take JSON there, e.g. STREAM_ROUTER_INGEST__INPUT_TOPICS=\'["a","b"]\')'
    )
