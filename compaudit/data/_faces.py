"""Vectorized drawing of the synthetic faces of :mod:`compaudit.data.synthetic`.

A batch of faces is drawn at once: every shape is an ellipse or band tested on a
precomputed coordinate grid broadcast against per-image parameters of shape
``(B, 1, 1)``, and the painter's algorithm becomes successive writes into one
label-encoded concept map. Colours are then gathered from a per-image palette.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["CONCEPTS", "render_faces"]

#: Concept codes of the masks; position = code written in the mask PNGs.
CONCEPTS = ("background", "face", "hair", "beard", "eyes", "mouth", "wrinkles")
BG, FACE, HAIR, BEARD, EYES, MOUTH, WRINKLES = range(len(CONCEPTS))

_EYE_RGB = np.array([0.10, 0.09, 0.12], np.float32)
_MOUTH_RGB = np.array([0.62, 0.22, 0.24], np.float32)
_BEARD_DARK = np.array([0.17, 0.13, 0.11], np.float32)
_GREY = np.array([0.78, 0.78, 0.80], np.float32)


def _ellipse(x: np.ndarray, y: np.ndarray, cx, cy, rx, ry) -> np.ndarray:
    """Boolean ``(B, S, S)`` mask of the filled ellipses (parameters ``(B, 1, 1)``)."""
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 <= 1.0


def render_faces(
    p: Mapping[str, np.ndarray], size: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Draw a batch of faces.

    Parameters
    ----------
    p
        Per-image parameters, each an array of length ``B`` (see ``synthetic._plan``).
    size
        Image side in pixels.
    rng
        Source of the per-pixel noise (stubble speckle, sensor noise).

    Returns
    -------
    images
        ``(B, size, size, 3)`` uint8 RGB.
    concepts
        ``(B, size, size)`` uint8 concept codes (:data:`CONCEPTS`).
    """
    b = len(p["cx"])
    col = lambda key: p[key].astype(np.float32).reshape(b, 1, 1)  # noqa: E731
    # Pixel centres in [-1, 1]; y grows downwards as in the image.
    axis = ((np.arange(size, dtype=np.float32) + 0.5) / size) * 2 - 1
    y, x = axis.reshape(1, size, 1), axis.reshape(1, 1, size)
    cx, cy, scale = col("cx"), col("cy"), col("scale")
    rx, ry = 0.44 * scale * col("width"), 0.56 * scale
    long_hair, beard, wrinkles = col("long_hair") > 0, col("beard") > 0, col("wrinkles") > 0

    face = _ellipse(x, y, cx, cy, rx, ry)
    # Long hair falls behind the head to below the chin; short hair hugs the skull.
    back_long = _ellipse(x, y, cx, cy + 0.3, rx * 1.4, ry * 1.45) & (y < cy + ry * 1.45)
    back_short = _ellipse(x, y, cx, cy - 0.05, rx * 1.12, ry * 1.06) & (y < cy + 0.2 * ry)
    back = np.where(long_hair, back_long, back_short)
    cap = _ellipse(x, y, cx, cy - 0.05, rx * 1.12, ry * 1.06) & (y < cy - 0.5 * ry)
    line = max(0.02, 1.6 / size)  # half-width of drawn lines: at least one pixel row
    forehead = face & (np.abs(x - cx) < 0.5 * rx) & ~cap
    lines = forehead & (
        (np.abs(y - (cy - 0.34 * ry)) < line) | (np.abs(y - (cy - 0.22 * ry)) < line)
    )
    eyes = _ellipse(x, y, cx - 0.38 * rx, cy - 0.1 * ry, 0.14 * rx, 0.09 * ry) | _ellipse(
        x, y, cx + 0.38 * rx, cy - 0.1 * ry, 0.14 * rx, 0.09 * ry
    )
    mouth = _ellipse(x, y, cx, cy + 0.5 * ry, 0.33 * rx, col("mouth_h") * ry)
    chin = face & (y > cy + 0.22 * ry)

    concepts = np.zeros((b, size, size), np.uint8)
    concepts[back] = HAIR
    concepts[face] = FACE
    concepts[chin & beard] = BEARD
    concepts[lines & wrinkles] = WRINKLES
    concepts[eyes & face] = EYES
    concepts[mouth & face] = MOUTH
    concepts[cap] = HAIR

    skin = p["skin_rgb"].astype(np.float32)
    palette = np.empty((b, len(CONCEPTS), 3), np.float32)
    palette[:, BG] = p["bg_rgb"]
    palette[:, FACE] = skin
    palette[:, HAIR] = p["hair_rgb"]
    strength = p["beard_strength"].astype(np.float32)[:, None]
    palette[:, BEARD] = skin * (1 - strength) + _BEARD_DARK * strength
    palette[:, EYES] = _EYE_RGB
    palette[:, MOUTH] = 0.5 * _MOUTH_RGB + 0.5 * skin * _MOUTH_RGB / _MOUTH_RGB.max()
    palette[:, WRINKLES] = skin * 0.68
    image = palette[np.arange(b)[:, None, None], concepts]  # (B, S, S, 3)

    hair = concepts == HAIR
    # Strands: a gentle periodic shading; old faces also get grey streaks.
    phase = col("phase")
    strands = 0.92 + 0.08 * np.sin(x * 23.0 + y * 5.0 + phase)
    streak = hair & (col("streaks") > 0) & (np.sin(x * 17.0 - y * 9.0 + phase) > 0.55)
    image *= np.where(hair, strands, 1.0)[..., None]
    image = np.where(streak[..., None], 0.35 * image + 0.65 * _GREY, image)
    speckle = rng.random((b, size, size), dtype=np.float32) < 0.45
    image *= np.where((concepts == BEARD) & speckle, 0.75, 1.0)[..., None]
    # Lighting: a global gain with a left-right gradient, then sensor noise.
    image *= (col("gain") * (1.0 + col("light_slope") * x))[..., None]
    image += rng.normal(0.0, 1.0, image.shape).astype(np.float32) * col("noise")[..., None]
    pixels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    return pixels, concepts
