"""Sparsity schedules for pruning during training.

Zhu & Gupta (2017), "To prune, or not to prune": between the begin step ``t0`` and the
end step ``t0 + nΔ`` the target sparsity rises as

    s_t = s_f + (s_i - s_f) * (1 - (t - t0) / (nΔ))^3

fast at first, while there are many redundant weights, and slowly near the end. Before
``t0`` the target is ``s_i``, after the end step ``s_f``. Masks are recomputed every
``Δ`` steps (``frequency``) from ``t0`` to the end step. Unlike TensorFlow's
model_pruning, which skips the last update when ``end - begin`` is not a multiple of
the frequency, the end step is always an update step here, so training that reaches it
ends exactly at ``s_f``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from compaudit.config import Checked, setting

__all__ = ["CubicSparsitySchedule", "schedule_problems"]


def schedule_problems(*, initial: float, final: float, begin: int, end: int,
                      final_name: str = "final_sparsity") -> Iterator[tuple[str | None, str]]:
    """Cross-field rules of a cubic sparsity schedule (Zhu & Gupta)."""
    if initial > final:
        yield None, (f"initial sparsity {initial} exceeds the final sparsity {final} "
                     f"({final_name}); sparsity may only grow during training")
    if end <= begin:
        yield "end_step", f"got {end!r}; expected an integer greater than begin_step ({begin!r})"


@dataclass(frozen=True, kw_only=True)
class CubicSparsitySchedule(Checked):
    """The Zhu & Gupta cubic sparsity schedule.

    Parameters
    ----------
    final_sparsity
        ``s_f``, reached at ``end_step``.
    begin_step
        ``t0``, the first update step (optimizer steps count from 1).
    end_step
        ``t0 + nΔ``, the last update step; the mask is fixed after it.
    frequency
        ``Δ``, optimizer steps between mask updates.
    initial_sparsity
        ``s_i``, the target at ``t0``.

    Examples
    --------
    >>> s = CubicSparsitySchedule(final_sparsity=0.9, begin_step=0, end_step=100, frequency=10)
    >>> round(s.sparsity_at(50), 6)
    0.7875
    """

    final_sparsity: float = setting(ge=0, lt=1)
    begin_step: int = setting(ge=0)
    end_step: int = setting(ge=1)
    frequency: int = setting(ge=1)
    initial_sparsity: float = setting(0.0, ge=0, lt=1)

    def _problems(self):
        yield from schedule_problems(initial=self.initial_sparsity, final=self.final_sparsity,
                                     begin=self.begin_step, end=self.end_step)

    def sparsity_at(self, step: int) -> float:
        """Target sparsity ``s_t`` at optimizer step ``step``."""
        if step <= self.begin_step:
            return float(self.initial_sparsity)
        if step >= self.end_step:
            return float(self.final_sparsity)
        progress = (step - self.begin_step) / (self.end_step - self.begin_step)
        return self.final_sparsity + (self.initial_sparsity - self.final_sparsity) * (
            1.0 - progress
        ) ** 3

    def is_update_step(self, step: int) -> bool:
        """Whether the mask is recomputed after optimizer step ``step``."""
        if step < self.begin_step or step > self.end_step:
            return False
        return (step - self.begin_step) % self.frequency == 0 or step == self.end_step

    def update_steps(self) -> list[int]:
        """All update steps >= 1, in order (steps count from 1)."""
        first = self.begin_step
        if first < 1:  # step 0 never happens; the next multiple of the frequency does
            first += self.frequency * -(-(1 - first) // self.frequency)
        steps = list(range(first, self.end_step + 1, self.frequency))
        if not steps or steps[-1] != self.end_step:
            steps.append(self.end_step)
        return steps
