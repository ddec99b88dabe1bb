"""How a per-patient override applies to a rule: a JSON merge patch, with keyed lists.

An override (``PUT /rules/overrides/{patient}/{rule}``) is a JSON object applied to the rule's
own JSON form:

- **Objects merge** as RFC 7396 (JSON Merge Patch) says: each member of the patch replaces the
  rule's member of that name, objects recursively; ``null`` removes the member, so the model's
  default applies again (``{"max_gap": null}``; a required field cannot be removed).
- **Lists of scalars are replaced** whole (RFC 7396): ``times``, ``measures``, ``alert_codes``.
- **Lists of keyed items merge by key**, so a patient's override of one trigger leaves the
  others alone. Keys (``KEYS``): ``any`` triggers by measure and side (a low limit —
  ``below``/``at_or_below`` — or a high one), ``escalate`` levels by priority, ``notify``
  notices by recipient (``to``) and category, CGM ``targets`` by metric and side
  (``above``/``below``), ``flag.codes`` by system and code. A patch item must give at least
  the first of these (measure, priority, to, metric, system and code) and matches the rule's
  items that agree on every key field it gives (a trigger patch without a limit matches the
  measure's only trigger; a notice without a category, the recipient's only notice); one
  match → merged into it (recursively, by these same rules); none → appended; more than one
  → refused as ambiguous.
- **A trigger's limit is one slot**: a patch item naming one of ``below``, ``at_or_below``,
  ``above``, ``at_or_above`` replaces the matched trigger's limit, so
  ``{"measure": "spo2", "at_or_below": 88}`` turns ``below: 90`` into ``at_or_below: 88`` and
  keeps its ``clear_at``.
- **Directives** (the ``$patch`` convention of Kubernetes strategic merge patch): an item
  ``{..key.., "$patch": "delete"}`` removes the matched item; a list whose first item is
  ``{"$patch": "replace"}`` replaces the rule's list with the items after it.

The rule's ``id`` and ``kind`` cannot change. The merged rule is validated by the same models
as the rule files (hub/rules/program.py ``with_override``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

DIRECTIVE = "$patch"
LIMITS = ("below", "at_or_below", "above", "at_or_above")
LOW = frozenset({"below", "at_or_below"})


def _trigger_key(item: dict[str, Any]) -> dict[str, Any]:
    key: dict[str, Any] = {}
    if "measure" in item:
        key["measure"] = item["measure"]
    given = [name for name in LIMITS if item.get(name) is not None]
    if given:
        key["side"] = "low" if given[0] in LOW else "high"
    return key


def _target_key(item: dict[str, Any]) -> dict[str, Any]:
    key: dict[str, Any] = {}
    if "metric" in item:
        key["metric"] = item["metric"]
    for side in ("above", "below"):
        if item.get(side) is not None:
            key["side"] = side
    return key


def _recipient(to: Any) -> Any:
    if isinstance(to, dict):
        return to.get("reference") or to.get("display")
    return to


def _notify_key(item: dict[str, Any]) -> dict[str, Any]:
    key: dict[str, Any] = {}
    if "to" in item:
        key["to"] = _recipient(item["to"])
    if "category" in item:
        key["category"] = item["category"]
    return key


def _fields(*names: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    def key(item: dict[str, Any]) -> dict[str, Any]:
        return {n: item[n] for n in names if n in item}
    return key


KEYS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "any": _trigger_key,
    "escalate": _fields("priority"),
    "notify": _notify_key,
    "targets": _target_key,
    "codes": _fields("system", "code"),
}
# Fields a patch item must give to name its item (the rest of the key may be left out).
REQUIRED: dict[str, tuple[str, ...]] = {"any": ("measure",), "escalate": ("priority",),
                                        "notify": ("to",), "targets": ("metric",),
                                        "codes": ("system", "code")}
# Defaults a rule item has when its file leaves the key field out (Notify.to / .category).
KEY_DEFAULTS: dict[str, dict[str, Any]] = {"notify": {"to": "care-team", "category": "alert"}}


def merge(target: Any, patch: Any, path: str = "") -> Any:
    """RFC 7396 merge of ``patch`` into ``target`` (neither is modified), with keyed lists
    merged by key; ValueError names the path of a patch that cannot apply."""
    if not isinstance(patch, dict):
        return patch
    if DIRECTIVE in patch:
        raise ValueError(f"{path or 'override'}: '{DIRECTIVE}' is only allowed in list items")
    out = dict(target) if isinstance(target, dict) else {}
    for name, value in patch.items():
        where = f"{path}.{name}" if path else name
        if value is None:
            out.pop(name, None)
        elif isinstance(value, list) and name in KEYS:
            out[name] = _merge_list(name, out.get(name) or [], value, where)
        else:
            out[name] = merge(out.get(name), value, where)
    return out


def _merge_list(name: str, base: list[Any], patch: list[Any], path: str) -> list[Any]:
    if patch and isinstance(patch[0], dict) and patch[0].get(DIRECTIVE) == "replace":
        if len(patch[0]) != 1:
            raise ValueError(f"{path}[0]: a replace directive stands alone")
        return [merge(None, item, f"{path}[{i + 1}]") for i, item in enumerate(patch[1:])]
    key_of = KEYS[name]
    defaults = KEY_DEFAULTS.get(name, {})
    out = list(base)
    for index, item in enumerate(patch):
        where = f"{path}[{index}]"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: expected an object")
        wanted = key_of(item)
        if any(field not in item for field in REQUIRED[name]):
            raise ValueError(f"{where}: name the item to change by its key "
                             f"({_key_words(name)})")
        hits = [i for i, have in enumerate(out) if isinstance(have, dict)
                and _agrees(key_of({**defaults, **have}), wanted)]
        if len(hits) > 1:
            raise ValueError(f"{where}: matches {len(hits)} items; give the whole key "
                             f"({_key_words(name)})")
        directive = item.get(DIRECTIVE)
        body = {k: v for k, v in item.items() if k != DIRECTIVE}
        if directive == "delete":
            if not hits:
                raise ValueError(f"{where}: no item with that key to delete")
            del out[hits[0]]
        elif directive is not None:
            raise ValueError(f"{where}: unknown directive '{directive}' (delete, replace)")
        elif not hits:
            out.append(merge(None, body, where))
        else:
            have = out[hits[0]]
            if name == "any" and any(body.get(limit) is not None for limit in LIMITS):
                have = {k: v for k, v in have.items() if k not in LIMITS}  # one limit slot
            out[hits[0]] = merge(have, body, where)
    return out


def _agrees(have: dict[str, Any], wanted: dict[str, Any]) -> bool:
    return all(have.get(k) == v for k, v in wanted.items())


def _key_words(name: str) -> str:
    return {"any": "measure, and a limit for its side", "escalate": "priority",
            "notify": "to and category", "targets": "metric and above/below",
            "codes": "system and code"}[name]
