"""Load a YAML file into a pydantic model, reporting every problem as file:line:column.

All errors are collected and raised at once (as Benthos lint and iomt-fhir's template loader do),
so an analyst fixes a file in one pass rather than one error per run.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError

from hub.errors import ConfigurationError, ErrorLocation, MappingError

M = TypeVar("M", bound=BaseModel)


def plain(node: Any) -> Any:
    """ruamel's round-trip containers → plain dicts/lists (pydantic validates plain data)."""
    if isinstance(node, CommentedMap):
        return {str(k): plain(v) for k, v in node.items()}
    if isinstance(node, CommentedSeq):
        return [plain(v) for v in node]
    return node


def child(node: Any, part: int | str) -> tuple[int, int, Any] | None:
    """The 1-based line/column of key or item ``part`` of a parsed YAML node, and its value;
    None when the node has no such key or item."""
    try:
        if isinstance(node, CommentedMap) and part in node:
            ln, cl = node.lc.key(part)
        elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
            ln, cl = node.lc.item(part)
        else:
            return None
        return ln + 1, cl + 1, node[part]
    except (AttributeError, KeyError, TypeError):
        return None


def mark(root: Any, loc: tuple[int | str, ...]) -> tuple[int, int]:
    """1-based line/column of the deepest node of ``loc`` that exists in the document."""
    _, line, col = _locate(root, loc, frozenset())
    return line, col


def field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def read_yaml(path: Path) -> Any:
    """Parse YAML keeping line marks; a syntax error becomes a MappingError at its position."""
    yaml = YAML(typ="rt")
    try:
        with path.open(encoding="utf-8") as fh:
            return yaml.load(fh)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        column = mark.column + 1 if mark is not None else None
        problem = ErrorLocation(str(path), line, column, "", f"YAML syntax: {exc.problem}")
        raise MappingError(f"{path}: invalid YAML", problems=[problem]) from None
    except OSError as exc:
        raise MappingError(f"{path}: cannot read ({exc.strerror})") from None


def position(path: Path, loc: tuple[int | str, ...]) -> tuple[int | None, int | None]:
    """Line/column of ``loc`` in a file that already parsed, for problems found after validation
    (e.g. a type_map naming a type no catalogue defines). Only called on the error path."""
    try:
        return mark(read_yaml(path), loc)
    except MappingError:
        return None, None


def validation_problems(path: Path, root: Any, error: ValidationError,
                        tags: frozenset[str] = frozenset()) -> list[ErrorLocation]:
    """Turn a pydantic ValidationError over ``root`` into positioned problems.

    ``tags`` are the member names of discriminated unions, which pydantic puts in an error's
    path (``rules[0].threshold.any``, ``destinations[1].healthlake.region``); where the document
    has no such key the tag is skipped, so the problem points at the field itself.
    """
    errors = error.errors(include_url=False, include_input=False)
    # A field that accepts alternatives (an expression or a list of them) fails once per
    # alternative; "should be a valid list" beside the real problem only confuses, so a
    # wrong-type error of an alternative is dropped when another error names the same field.
    real = {_base(e["loc"]) for e in errors if _is_alternative(e["loc"])
            and not e["type"].endswith("_type")}
    problems = []
    for err in errors:
        if _is_alternative(err["loc"]) and err["type"].endswith("_type") and \
                _base(err["loc"]) in real:
            continue
        loc, line, col = _locate(root, tuple(p for p in err["loc"] if not _is_tag(p)), tags)
        problem = ErrorLocation(str(path), line, col, field_path(loc), err["msg"])
        if problem not in problems:
            problems.append(problem)
    return problems


def _locate(root: Any, loc: tuple[int | str, ...], tags: frozenset[str]
            ) -> tuple[tuple[int | str, ...], int, int]:
    """``loc`` without the union ``tags`` the document has no key for, and the 1-based
    line/column of its deepest node that exists in the document."""
    node, line, col, kept = root, 1, 1, []
    for part in loc:
        if part in tags and isinstance(node, dict) and part not in node:
            continue
        kept.append(part)
        found = child(node, part)
        line, col, node = found if found is not None else (line, col, None)
    return tuple(kept), line, col


def _is_tag(part: int | str) -> bool:
    """pydantic's names for validation steps (``function-after[...]``, ``list[...]``), which
    are not keys of the file."""
    return isinstance(part, str) and (part.startswith("function-") or part.endswith("]"))


def _is_alternative(loc: tuple[int | str, ...]) -> bool:
    return any(_is_tag(p) for p in loc)


def _base(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:
    """The location up to the first validation-step name."""
    for index, part in enumerate(loc):
        if _is_tag(part):
            return tuple(loc[:index])
    return tuple(loc)


@cache
def union_tags(model: type[BaseModel]) -> frozenset[str]:
    """The member names of every discriminated union in ``model`` (``threshold``, ``smart``...),
    read from its pydantic core schema, so that a new member needs no list kept beside it."""
    found: set[str] = set()
    todo: list[Any] = [model.__pydantic_core_schema__]
    while todo:
        node = todo.pop()
        if isinstance(node, dict):
            if node.get("type") == "tagged-union":
                found.update(k for k in node["choices"] if isinstance(k, str))
            todo.extend(node.values())
        elif isinstance(node, list | tuple):
            todo.extend(node)
    return frozenset(found)


def load_model(path: Path, model: type[M], *, context: dict[str, Any] | None = None,
               what: str | None = None, error: type[ConfigurationError] = MappingError) -> M:
    """Read ``path`` and validate it as ``model``; every problem is reported at once.

    Raises ``error`` ("<path>: invalid <what>", default the model's name) listing the problems
    as file:line:column and field, YAML syntax errors included; a problem inside a member of a
    discriminated union points at the field, not at the member's name (:func:`union_tags`).
    """
    title = f"{path}: invalid {what or model.__name__}"
    try:
        root = read_yaml(path)
    except MappingError as exc:
        if error is MappingError:
            raise
        raise error(title if exc.problems else str(exc), problems=exc.problems) from None
    if not isinstance(root, CommentedMap):
        problem = ErrorLocation(str(path), 1, 1, "", "expected a mapping at the top level")
        raise error(title, problems=[problem])
    try:
        return model.model_validate(plain(root), context=context)
    except ValidationError as exc:
        raise error(title, problems=validation_problems(path, root, exc, union_tags(model))
                    ) from None
