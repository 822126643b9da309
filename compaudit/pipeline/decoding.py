"""Datasets decoded once per run for every job that reads them (see data/decoded.py).

The training set is read by every training job and every fine-tuning or calibrating
variant job; each evaluation set by every variant job. :class:`RunDecoder` decodes
each set the first time a stage asks for it, on the audit's executor, into the run
folder (``variants/.decoded/``), hands out factories that read the array, and removes
the arrays when the run's jobs are done. The arrays of a run share one budget of bytes
(``[data].cache_gib``); a set that no longer fits is decoded in every job that reads it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from compaudit.data.decoded import DecodedDataset, decode_to_file
from compaudit.rundir import RunFolder

__all__ = ["RunDecoder"]


class RunDecoder:
    """Decode named datasets once per run, within ``budget`` bytes in all;
    :meth:`close` removes what it wrote."""

    def __init__(self, folder: RunFolder, pool: Any, log: Callable[[str], None], *,
                 budget: int) -> None:
        self.folder, self.pool, self.log = folder, pool, log
        self.budget = budget
        self._factories: dict[str, Callable[[], Any]] = {}
        self._used = 0

    def get(self, name: str, factory: Callable[[], Any]) -> Callable[[], Any]:
        """A factory of ``factory()``'s items read from one decoded array (``name``: a
        file name in the run's decoded folder); ``factory`` itself when the set cannot
        be decoded into one array (over the budget, or items of several shapes)."""
        if name not in self._factories:
            self.log(f"[decode] {name}: decoding once for every job")
            path = decode_to_file(factory, self.folder.decoded(name), executor=self.pool,
                                  budget=self.budget - self._used)
            if path is None:
                self.log(f"[decode] {name}: not cached (over the remaining "
                         f"{(self.budget - self._used) / 2**30:.2f} GiB of [data].cache_gib, "
                         "or items of several shapes); every job decodes it")
                self._factories[name] = factory
            else:
                self._used += path.stat().st_size
                self._factories[name] = partial(DecodedDataset, factory, path)
        return self._factories[name]

    def close(self) -> None:
        """Delete the decoded arrays (ours, in the run folder: a cache of this run)."""
        for name in self._factories:
            path = self.folder.decoded(name)
            path.unlink(missing_ok=True)
            Path(f"{path}.json").unlink(missing_ok=True)
            if path.parent.is_dir() and not any(path.parent.iterdir()):
                path.parent.rmdir()

    def __enter__(self) -> RunDecoder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
