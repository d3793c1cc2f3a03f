"""Reference and evaluation texts: the bundled ones and a user's own file.

The bundled texts were written for Outlier Lab: `prose` is ordinary English (~3,300
SmolLM2 tokens) and `code` a set of short snippets in several languages. A corpus is a
tuple of passages (split at blank lines), so each passage can start its own sequence.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from outlier_core.errors import InputError

BUNDLED = ("prose", "code")
DEFAULT_CORPUS = "prose"
DATA_DIR = Path(__file__).parents[1] / "data"  # packaged as outlier_core/data/*.txt
MAX_FILE_BYTES = 2_000_000  # an evaluation file is read whole; keep requests bounded


@dataclass(frozen=True)
class Corpus:
    name: str
    passages: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n\n".join(self.passages)

    @property
    def key(self) -> str:
        """Identifies the content, so caches keyed by it notice an edited file."""
        return hashlib.sha256(self.text.encode()).hexdigest()[:16]


def split_passages(text: str) -> tuple[str, ...]:
    return tuple(p.strip() for p in re.split(r"\n\s*\n", text) if p.strip())


def from_text(text: str, name: str = "text", field: str = "text") -> Corpus:
    if not isinstance(text, str) or not text.strip():
        raise InputError(field, "must be a non-empty string")
    return Corpus(name, split_passages(text))


def bundled(name: str = DEFAULT_CORPUS) -> Corpus:
    if name not in BUNDLED:
        raise InputError("corpus", f"unknown corpus {name!r}; choose one of {', '.join(BUNDLED)}")
    text = (DATA_DIR / f"{name}.txt").read_text(encoding="utf-8")
    return from_text(text, name)


def from_file(path: str | Path, field: str = "eval_file") -> Corpus:
    """A user's own UTF-8 text file."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise InputError(field, f"{path} is not a readable file")
    if path.stat().st_size > MAX_FILE_BYTES:
        raise InputError(field, f"{path} is larger than {MAX_FILE_BYTES} bytes")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise InputError(field, f"{path} is not UTF-8 text") from err
    return from_text(text, path.name, field)
