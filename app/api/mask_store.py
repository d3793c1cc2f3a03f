"""The server's selection masks: by id, in memory, and on disk as MASK.json + MASK.safetensors.

Masks outlive the process (they are reloaded at startup) and may belong to another model
than the one serving; a fine-tune checks a mask against the model before it starts.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from app.api.errors import ApiError
from outlier_core.errors import InputError
from outlier_core.ids import is_id, new_id
from outlier_core.select.mask_files import load_mask
from outlier_core.select.masks import SelectionMask

log = logging.getLogger(__name__)



class MaskStore:
    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._masks: dict[str, SelectionMask] = {}
        for path in sorted(self.folder.glob("*.json")):
            if not is_id(path.stem):
                continue
            try:
                self._masks[path.stem] = load_mask(path)
            except InputError as err:
                log.warning("skipping mask %s: %s", path, err)

    def add(self, mask: SelectionMask) -> str:
        mask_id = new_id()
        self.replace(mask_id, mask)
        return mask_id

    def replace(self, mask_id: str, mask: SelectionMask) -> None:
        mask.save(self.folder / f"{mask_id}.json")
        with self._lock:
            self._masks[mask_id] = mask

    def get(self, mask_id: str) -> SelectionMask:
        with self._lock:
            if mask_id not in self._masks:
                raise ApiError(404, f"mask_id: no mask {mask_id!r}", "mask_id")
            return self._masks[mask_id]

    def list(self) -> list[tuple[str, SelectionMask]]:
        """Newest first (ids start with their creation time)."""
        with self._lock:
            return sorted(self._masks.items(), reverse=True)

    def delete(self, mask_id: str) -> None:
        with self._lock:
            if self._masks.pop(mask_id, None) is None:
                raise ApiError(404, f"mask_id: no mask {mask_id!r}", "mask_id")
        for suffix in (".json", ".safetensors"):
            (self.folder / f"{mask_id}{suffix}").unlink(missing_ok=True)
