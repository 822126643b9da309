"""Activation range observers for static quantization calibration, matching ONNX Runtime's.

An observer sees every calibration batch of one tensor and returns the real range
``(rmin, rmax)`` that :func:`~compaudit.compress.qparams.compute_qparams` turns into a
scale and zero point.

* :class:`MinMaxObserver` is ``onnxruntime.quantization``'s ``MinMaxCalibrater`` without
  moving averages: the smallest and largest value over all batches.
* :class:`PercentileObserver` is its ``PercentileCalibrater`` with
  ``CalibTensorRangeSymmetric=True``: one histogram of ``|x|`` over all calibration
  values (``num_bins`` equal bins from ``min|x|`` to ``max|x|``, NumPy's binning), the
  threshold ``t`` is the bin edge where the cumulative share first reaches
  ``percentile`` %, and the range is ``[-t, t]`` clipped to the observed
  ``[min, max]``. ONNX Runtime builds the histogram of all batches at once; we need the
  end points first, so calibration makes two passes (``passes = 2``) and adds per-batch
  histograms with the same edges, which gives the same counts.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch

__all__ = ["Observer", "MinMaxObserver", "PercentileObserver", "make_observer", "OBSERVERS"]


class Observer(Protocol):
    """What calibration needs from an observer."""

    passes: int

    def observe(self, x: torch.Tensor, pass_index: int) -> None:
        """Record one batch of the tensor during pass ``pass_index`` (0-based)."""

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The real range ``(rmin, rmax)`` as float32 scalars."""


class MinMaxObserver:
    """Smallest and largest value seen (ONNX Runtime's MinMax calibration)."""

    passes = 1

    def __init__(self) -> None:
        self.min: torch.Tensor | None = None
        self.max: torch.Tensor | None = None

    def observe(self, x: torch.Tensor, pass_index: int) -> None:  # noqa: D102
        lo, hi = x.detach().float().min().cpu(), x.detach().float().max().cpu()
        self.min = lo if self.min is None else torch.minimum(self.min, lo)
        self.max = hi if self.max is None else torch.maximum(self.max, hi)

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        if self.min is None or self.max is None:
            raise RuntimeError("observer saw no data; calibration ran no batch through it")
        return self.min, self.max


class PercentileObserver:
    """Symmetric percentile of ``|x|`` from a histogram (ONNX Runtime's Percentile calibration).

    Parameters
    ----------
    percentile
        Share (in %) of ``|x|`` values kept inside the range, e.g. 99.999.
    num_bins
        Histogram bins (ONNX Runtime's default 2048).
    """

    passes = 2

    def __init__(self, *, percentile: float = 99.999, num_bins: int = 2048) -> None:
        self.percentile = percentile
        self.num_bins = num_bins
        self._minmax = MinMaxObserver()
        self._amin: np.float32 | None = None
        self._amax: np.float32 | None = None
        self._hist: np.ndarray | None = None
        self._edges: np.ndarray | None = None

    def observe(self, x: torch.Tensor, pass_index: int) -> None:  # noqa: D102
        a = x.detach().float().abs()
        if pass_index == 0:
            self._minmax.observe(x, 0)
            # float32 scalars, as ORT's np.histogram sees them (bin arithmetic in float32)
            lo, hi = np.float32(a.min().item()), np.float32(a.max().item())
            self._amin = lo if self._amin is None else min(self._amin, lo)
            self._amax = hi if self._amax is None else max(self._amax, hi)
            return
        if self._amin is None or self._amax is None:
            raise RuntimeError("PercentileObserver: pass 1 needs the range of pass 0")
        values = a.cpu().numpy().ravel()
        # NumPy bins identically whether the range is implied by the data or passed in,
        # so per-batch histograms over the global [min|x|, max|x|] add up exactly. The ends
        # stay float32 (NumPy takes any real scalar; its stubs name only float).
        hist, edges = np.histogram(values, bins=self.num_bins,
                                   range=(self._amin, self._amax))  # type: ignore[arg-type]
        self._hist = hist if self._hist is None else self._hist + hist
        self._edges = edges.astype(np.float32)

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: D102
        rmin, rmax = self._minmax.range()
        if self._hist is None or self._edges is None:
            raise RuntimeError("percentile observer needs its second calibration pass")
        cdf = np.cumsum(self._hist / self._hist.sum())
        idx = int(np.searchsorted(cdf, self.percentile / 100.0))
        threshold = torch.tensor(float(self._edges[min(idx, len(self._edges) - 1)]),
                                 dtype=torch.float32)
        lo = torch.maximum(-threshold, rmin)
        hi = torch.minimum(threshold, rmax)
        return lo, hi


OBSERVERS = ("minmax", "percentile")


def make_observer(kind: str, *, percentile: float = 99.999) -> Observer:
    """A fresh observer of ``kind`` (``"minmax"`` or ``"percentile"``)."""
    if kind == "minmax":
        return MinMaxObserver()
    if kind == "percentile":
        return PercentileObserver(percentile=percentile)
    raise ValueError(f"activation_observer must be one of {OBSERVERS}, got {kind!r}")
