"""A view's state in its URL, so a reload reopens it and a link shares it.

Each page writes its controls into the query string as they change (a clientside callback
from `view_writer`, through `history.replaceState`: no page load) and reads them back in its
`layout(**query)`. The shell writes what every page shares — the prompt,
the intervention stack, the mask, the followed job — and adopts them from a URL that
carries them. The nav bar's links carry each page's last query, so going back to a page
reopens it as it was left.
"""

from __future__ import annotations

import json
from typing import Callable, TypeVar

T = TypeVar("T")

MODES = ("zero", "mean", "scale", "set")


def encode_stack(stack: list[dict]) -> str | None:
    """'11:resid_post:0:507:zero,2:resid_post:3:7:scale:0.5' (None for an empty stack)."""
    items = []
    for item in stack:
        fields = [item["layer"], item["site"], item["position"], item["dim"], item["mode"]]
        if item["mode"] in ("scale", "set"):
            fields.append(repr(float(item["value"])))
        items.append(":".join(str(f) for f in fields))
    return ",".join(items) or None


def decode_stack(text: str) -> list[dict] | None:
    """The stack of `encode_stack`, or None when the text is not one."""
    stack = []
    for entry in filter(None, text.split(",")):
        fields = entry.split(":")
        try:
            layer, site, position, dim, mode = int(fields[0]), fields[1], int(fields[2]), int(fields[3]), fields[4]
            value = float(fields[5]) if mode in ("scale", "set") else None
        except (IndexError, ValueError):
            return None
        if mode not in MODES or min(layer, position, dim) < 0:
            return None
        stack.append({"layer": layer, "site": site, "position": position, "dim": dim, "mode": mode, "value": value})
    return stack


def encode_coordinate(selected: dict | None) -> str | None:
    """'11:resid_post:0:507' for a selected activation coordinate."""
    if not selected:
        return None
    return ":".join(str(selected[k]) for k in ("layer", "site", "position", "dim"))


def decode_coordinate(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        layer, site, position, dim = text.split(":")
        return {"layer": int(layer), "site": site, "position": int(position), "dim": int(dim), "token": None, "value": None}
    except ValueError:
        return None


def shell_query(prompt: dict | None, stack: list[dict] | None, mask: dict | None, job: dict | None) -> dict[str, str | None]:
    """The keys every page's URL carries (None: remove the key)."""
    return {
        "prompt": prompt["text"] if prompt else None,
        "bos": ("1" if prompt["prepend_bos"] else "0") if prompt else None,
        "stack": encode_stack(stack or []),
        "mask": mask["id"] if mask else None,
        "job": job["id"] if job else None,
    }


def read(query: dict, key: str, cast: Callable[[str], T], default: T) -> T:
    """One query value as the control wants it, or the default when absent or unreadable."""
    raw = query.get(key)
    if raw is None or raw == "":
        return default
    try:
        return cast(raw)
    except ValueError:
        return default


def listed(query: dict, key: str, default: list[str]) -> list[str]:
    """A checklist's values: 'a,b' -> ['a', 'b']; an empty value is an empty list; absent -> default."""
    raw = query.get(key)
    if raw is None:
        return default
    return [v for v in raw.split(",") if v]


def number(raw: str) -> float | int:
    value = float(raw)
    return int(value) if value.is_integer() and "e" not in raw.lower() and "." not in raw else value


def view_writer(path: str, keys: tuple[str, ...]) -> str:
    """A clientside callback: the page's control values into its URL; it returns the page's query."""
    return f"function(...args) {{ return window.outlierLab.writeView({json.dumps(path)}, {json.dumps(list(keys))}, args); }}"
