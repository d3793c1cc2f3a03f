"""The server's selection masks: by id, on disk as MASK.json + MASK.safetensors, under quotas.

Masks outlive the process and may belong to another model than the one serving; a
fine-tune checks a mask against the model before it starts. Memory holds only each mask's
summary, read from its safetensors header when the store opens; a mask is read whole when
a request needs its indices, and only the last one read is kept. A file that cannot be
read back is listed as unreadable, with the reason, and never breaks a listing.

Quotas (`MaskLimits`): the coordinates of one mask, the number of masks and the bytes
their files take; a mask past one is refused before anything is written. Every method but
`summary` may read or write files: routes call them from a worker thread.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from app.api.errors import ApiError
from outlier_core.errors import InputError
from outlier_core.ids import is_id, new_id
from outlier_core.select.mask_files import check_stored, read_safetensors, read_summary
from outlier_core.select.masks import MaskSummary, SelectionMask

log = logging.getLogger(__name__)

SUFFIXES = (".safetensors", ".json")  # the twin first: a mask with its manifest written is whole


@dataclass(frozen=True)
class MaskLimits:
    coordinates: int  # distinct coordinates one mask may select
    masks: int  # masks kept
    disk_bytes: int  # bytes the masks' files may take together


@dataclass(frozen=True)
class Unreadable:
    id: str
    reason: str


class MaskStore:
    def __init__(self, folder: Path, limits: MaskLimits):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.limits = limits
        self._lock = threading.Lock()  # guards the fields below and orders the writes
        self._summaries: dict[str, MaskSummary] = {}
        self._unreadable: dict[str, str] = {}
        self._bytes: dict[str, int] = {}  # per id, what its files take on disk
        self._recent: tuple[str, SelectionMask] | None = None  # the last mask read whole
        ids = {path.stem for path in self.folder.iterdir() if path.suffix in SUFFIXES and is_id(path.stem)}
        for mask_id in sorted(ids):
            self._index(mask_id)

    def _path(self, mask_id: str, suffix: str) -> Path:
        return self.folder / f"{mask_id}{suffix}"

    def _index(self, mask_id: str) -> None:
        self._bytes[mask_id] = sum(p.stat().st_size for p in (self._path(mask_id, s) for s in SUFFIXES) if p.is_file())
        try:
            self._summaries[mask_id] = read_summary(self._path(mask_id, ".safetensors"))
        except (InputError, OSError) as err:
            reason = err.reason if isinstance(err, InputError) else "its .safetensors file is missing or cannot be opened"
            log.warning("mask %s cannot be read back, listing it as unreadable: %s", mask_id, reason)
            self._unreadable[mask_id] = reason

    def add(self, mask: SelectionMask) -> str:
        mask_id = new_id()
        self._write(mask_id, mask)
        return mask_id

    def replace(self, mask_id: str, mask: SelectionMask) -> None:
        self.summary(mask_id)
        self._write(mask_id, mask)

    def _write(self, mask_id: str, mask: SelectionMask) -> None:
        mask.check_size(self.limits.coordinates)
        with self._lock:
            known = self._summaries.keys() | self._unreadable.keys()
            if mask_id not in known and len(known) >= self.limits.masks:
                raise ApiError(409, f"mask: the server keeps at most {self.limits.masks} masks; delete one first", "mask")
            used = sum(self._bytes.values()) - self._bytes.get(mask_id, 0)
            if used + _estimated_bytes(mask) > self.limits.disk_bytes:
                raise ApiError(409, f"mask: the masks would take more than the server's {self.limits.disk_bytes:,} bytes; delete some first", "mask")
            mask.save(self._path(mask_id, ".json"))
            self._summaries[mask_id] = mask.summary()
            self._unreadable.pop(mask_id, None)
            self._bytes[mask_id] = sum(self._path(mask_id, s).stat().st_size for s in SUFFIXES)
            self._recent = (mask_id, mask)

    def summary(self, mask_id: str) -> MaskSummary:
        """From memory: safe on the event loop."""
        with self._lock:
            if mask_id in self._unreadable:
                raise ApiError(409, f"mask_id: mask {mask_id} cannot be read back ({self._unreadable[mask_id]}); delete it", "mask_id")
            if mask_id not in self._summaries:
                raise ApiError(404, f"mask_id: no mask {mask_id!r}", "mask_id")
            return self._summaries[mask_id]

    def get(self, mask_id: str) -> SelectionMask:
        """The whole mask, read from its file (the last one read is kept)."""
        self.summary(mask_id)
        with self._lock:
            if self._recent is not None and self._recent[0] == mask_id:
                return self._recent[1]
            mask = self._read(mask_id)
            self._recent = (mask_id, mask)
            return mask

    def _read(self, mask_id: str) -> SelectionMask:
        try:
            mask, stored = read_safetensors(self._path(mask_id, ".safetensors").read_bytes())
            mask.check_size(self.limits.coordinates, "mask_id")
            check_stored(mask, stored)
        except (InputError, OSError) as err:
            reason = err.reason if isinstance(err, InputError) else "its .safetensors file cannot be opened"
            log.warning("mask %s cannot be read back: %s", mask_id, reason)
            raise ApiError(409, f"mask_id: mask {mask_id} cannot be read back ({reason})", "mask_id") from err
        return mask

    def list(self) -> tuple[list[tuple[str, MaskSummary]], list[Unreadable]]:
        """Newest first (ids start with their creation time): the summaries, and what cannot be read."""
        with self._lock:
            readable = sorted(self._summaries.items(), reverse=True)
            unreadable = [Unreadable(mask_id, reason) for mask_id, reason in sorted(self._unreadable.items(), reverse=True)]
        return readable, unreadable

    def delete(self, mask_id: str) -> None:
        """Also removes a mask that cannot be read back."""
        with self._lock:
            if self._summaries.pop(mask_id, None) is None and self._unreadable.pop(mask_id, None) is None:
                raise ApiError(404, f"mask_id: no mask {mask_id!r}", "mask_id")
            self._bytes.pop(mask_id, None)
            if self._recent is not None and self._recent[0] == mask_id:
                self._recent = None
            for suffix in SUFFIXES:
                self._path(mask_id, suffix).unlink(missing_ok=True)


def _estimated_bytes(mask: SelectionMask) -> int:
    """What the two files will take, from counts only: per coordinate one int64 per axis in
    the twin, per listed index the same again in both files (JSON digits run a little longer)."""
    stored = sum(n * 8 * len(mask.shapes[name]) for name, n in mask.counts().items())
    listed = sum(int(p.index.numel()) * 8 for p in mask.parts)
    return stored + 3 * listed + 4096
