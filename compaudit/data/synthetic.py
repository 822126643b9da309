"""Synthetic faces in the CelebA file format: the embedded default of the demo and tests.

:func:`generate_synthetic_faces` writes a folder that :class:`~compaudit.data.celeba.CelebA`
reads like the real dataset (``img_align_celeba/*.jpg``, ``list_attr_celeba.txt`` with
the 40 official attribute names, ``list_eval_partition.txt``), plus concept masks.

What is planted, and why
------------------------
* **Target.** ``Blond_Hair`` is the hair colour: blond hues versus black, brown or red.
* **Protected cues.** ``Male`` shows as a beard or stubble (70% of men) and, through
  the planted link below, short hair; ``Young`` as the absence of forehead wrinkles
  (90% of older faces have them, 5% of young ones) and grey streaks (60% vs 2%) and a
  slightly wider face. The cues are visible so a model *can* learn gender and age.
* **Group sizes.** The joint of (Blond_Hair, Male, Young) in ``list_attr_celeba.txt`` is
  exactly the requested one (default: the CelebA test split, REFERENCES.md Table 1,
  scaled to ``n`` by largest remainder), so the rare blond men are as rare as in CelebA
  unless ``joint`` says otherwise.
* **Planted harm: gender-linked hair length** (``spurious``). Short hair hugs the skull
  and shows about a third of long hair's pixels, so its colour is a small signal. Men's
  hair is long with probability ``(1 - spurious) / 2`` and women's with
  ``(1 + spurious) / 2`` (default 0.8: 10% and 90%). Most blond men therefore carry
  their label in a few pixels, and a model short of capacity (a pruned one) stops
  reading them and falls back on what is left, chiefly gender, which says "not blond"
  (CelebA's joint). ``spurious=0`` is the control: hair length independent of gender,
  so short hair costs men and women alike. Measured in the demo's control
  (``compaudit demo --no-spurious``, 5 replicas): gmp-90 raises the false-negative rate
  of clear blond hair from 3% to 22% (women) and 24% (men) where it is short, and only
  from 3% to 7% where it is long.
* **Ambiguous hair.** A share ``ambiguous`` of every (Blond_Hair, Male, Young) group
  (rounded per group, so independent of gender and label) gets a hue near a
  light-brown middle, moved only 20% of the way towards its class's mean colour: a
  weak signal a high-capacity model can still use, the hard examples of both arms.
* **Label noise.** For ``round(label_noise * n)`` images the drawn hair class is the
  opposite of the annotation, like CelebA's noisy labels; annotations keep the joint.
* **Nuisances.** Position and size jitter, skin tone, background colour, lighting gain
  and gradient, hair strands, sensor noise.

Other attributes follow what is drawn (``Black_Hair``, ``Brown_Hair``, ``Gray_Hair``,
``No_Beard``, ``5_o_Clock_Shadow``, ``Mustache``, ``Smiling``, ``Pale_Skin``); the rest
are -1. ``synthetic_meta.csv`` records the planted truth per image and
``synthetic.json`` the arguments. Same arguments and seed give byte-identical files
(on the same Pillow/libjpeg build).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from fractions import Fraction
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from compaudit.data._faces import CONCEPTS, render_faces
from compaudit.data._generated import claim_folder, replace_owned_files, write_marker
from compaudit.data.base import register_dataset
from compaudit.data.celeba import CELEBA_ATTRIBUTES, IMAGE_DIR, CelebA, find_celeba_root
from compaudit.errors import AuditInputError
from compaudit.simulate import CELEBA_TEST_JOINT

__all__ = [
    "SyntheticFaces",
    "generate_synthetic_faces",
    "allocate_counts",
    "load_concept_mask",
    "concept_table",
    "CELEBA_TEST_JOINT",
    "CONCEPTS",
    "MARKER",
]

_BLOND = np.array([[0.94, 0.83, 0.52], [0.90, 0.78, 0.45], [0.96, 0.88, 0.63], [0.95, 0.92, 0.76]])
_DARK = np.array([[0.10, 0.08, 0.07], [0.28, 0.19, 0.12], [0.45, 0.30, 0.18], [0.60, 0.25, 0.12]])
_DARK_P = (0.3, 0.3, 0.3, 0.1)  # black, dark brown, brown, red
_MIDDLE = np.array([0.68, 0.54, 0.33])  # light brown: neither clearly blond nor dark
_SKIN = np.array([[0.96, 0.81, 0.70], [0.44, 0.29, 0.20]])  # lightest, darkest
_CHUNK = 500  # images per rendering task; fixed so output does not depend on workers
_SPLITS = ("train", "valid", "test")
#: The file that marks a folder as written by :func:`generate_synthetic_faces`.
MARKER = ".compaudit-synthetic"
_GENERATOR = "compaudit.data.synthetic.generate_synthetic_faces"
_TABLES = ("list_attr_celeba.txt", "list_eval_partition.txt", "synthetic_meta.csv",
           "synthetic.json")


def _image_names(n: int) -> list[str]:
    return [f"{i + 1:0{max(6, len(str(n)))}d}.jpg" for i in range(n)]


def _own_files(settings: Mapping, where: Path | None = None) -> list[str]:
    """Every file (relative, ``/``-separated) a generation with ``settings`` writes."""
    n, masks = settings.get("n"), settings.get("masks")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1 or not isinstance(masks, bool):
        raise AuditInputError(
            f"{where}: fields n and masks are {n!r} and {masks!r}; expected a positive "
            "integer and true/false as generate_synthetic_faces writes them. Nothing was "
            "deleted; generate into an empty or new folder instead"
        )
    names = _image_names(n)
    files = [f"{IMAGE_DIR}/{name}" for name in names]
    if masks:
        files += [f"masks/{Path(name).stem}.png" for name in names] + ["masks/concepts.csv"]
    return files + list(_TABLES)


def allocate_counts(weights: Sequence[float], n: int) -> np.ndarray:
    """Split ``n`` into integer counts proportional to ``weights`` (largest remainder).

    Each count is the floor of its exact quota; the leftover units go to the largest
    fractional parts, ties to the earlier entry. Counts always sum to ``n``.

    Examples
    --------
    >>> allocate_counts([1, 1, 1], 10).tolist()
    [4, 3, 3]
    """
    fractions = [Fraction(w) for w in weights]
    total = sum(fractions)
    quotas = [f * n / total for f in fractions]
    counts = np.array([q.numerator // q.denominator for q in quotas], dtype=np.int64)
    order = sorted(range(len(quotas)), key=lambda i: (-(quotas[i] - int(counts[i])), i))
    counts[order[: n - int(counts.sum())]] += 1
    return counts


def _joint_mapping(joint: Mapping | Sequence) -> Mapping:
    """``joint`` keyed by (Blond_Hair, Male, Young), from a mapping or from rows
    ``[blond, male, young, weight]`` (each group at most once)."""
    if isinstance(joint, Mapping):
        return joint
    is_rows = isinstance(joint, Sequence) and not isinstance(joint, str)
    rows = list(joint) if is_rows else []
    ok = is_rows and all(
        isinstance(row, Sequence) and len(row) == 4 and all(isinstance(v, bool) for v in row[:3])
        and isinstance(row[3], (int, float)) and not isinstance(row[3], bool) for row in rows)
    mapping = {tuple(row[:3]): row[3] for row in rows} if ok else {}
    if not ok or len(mapping) != len(rows):
        raise AuditInputError(f"generate_synthetic_faces: joint: got {joint!r}; expected rows "
                              "[Blond_Hair, Male, Young, weight] (three booleans and a number), "
                              "each group at most once")
    return mapping


def _check_args(n, image_size, spurious, ambiguous, label_noise, joint, split_fractions):
    problems = []
    if not isinstance(n, (int, np.integer)) or n < 1:
        problems.append(f"n: expected a positive integer, got {n!r}")
    if not isinstance(image_size, (int, np.integer)) or image_size < 16:
        problems.append(f"image_size: expected an integer of at least 16, got {image_size!r}")
    if not 0 <= spurious < 1:
        problems.append(f"spurious: expected a number in [0, 1), got {spurious!r}")
    if not 0 <= ambiguous <= 1:
        problems.append(f"ambiguous: expected a share in [0, 1], got {ambiguous!r}")
    if not 0 <= label_noise <= 0.5:
        problems.append(f"label_noise: expected a rate in [0, 0.5], got {label_noise!r}")
    if len(split_fractions) != 3 or min(split_fractions) < 0 or abs(sum(split_fractions) - 1) > 1e-9:
        problems.append("split_fractions: expected three non-negative numbers (train, valid, "
                        f"test) summing to 1, got {tuple(split_fractions)!r}")
    unknown = [key for key in joint if tuple(map(bool, key)) not in CELEBA_TEST_JOINT]
    if unknown or min(joint.values(), default=-1) < 0 or sum(joint.values()) <= 0:
        problems.append("joint: expected non-negative weights keyed by (Blond_Hair, Male, "
                        f"Young) tuples of bools, with a positive sum; got {dict(joint)!r}")
    if problems:
        raise AuditInputError([f"generate_synthetic_faces: {p}" for p in problems])


def _plan(n: int, rng: np.random.Generator, *, spurious: float, ambiguous: float,
          label_noise: float, joint: Mapping, split_fractions: Sequence[float]) -> pd.DataFrame:
    """Draw every per-image attribute and drawing parameter (one row per image)."""
    weights = {tuple(map(bool, k)): v for k, v in joint.items()}
    counts = allocate_counts([weights.get(key, 0) for key in CELEBA_TEST_JOINT], n)
    group = rng.permutation(np.repeat(np.arange(8), counts))  # random file order
    keys = np.array(list(CELEBA_TEST_JOINT), dtype=bool)
    blond, male, young = keys[group].T
    amb = np.zeros(n, bool)
    split = np.empty(n, object)
    for g in range(8):
        members = np.flatnonzero(group == g)
        amb[rng.permutation(members)[: int(np.floor(ambiguous * len(members) + 0.5))]] = True
        for flag in (True, False):  # stratify splits by group and ambiguity
            members = rng.permutation(np.flatnonzero((group == g) & (amb == flag)))
            sizes = allocate_counts(split_fractions, len(members)) if len(members) else [0] * 3
            split[members] = np.repeat(_SPLITS, sizes)
    noisy = np.zeros(n, bool)
    noisy[rng.permutation(n)[: int(np.floor(label_noise * n + 0.5))]] = True
    drawn = blond ^ noisy

    u = rng.random((n, 12))
    shade_b, shade_d = rng.integers(0, 4, n), rng.choice(4, n, p=_DARK_P)
    base = np.where(drawn[:, None], _BLOND[shade_b], _DARK[shade_d])
    mean = np.where(drawn[:, None], _BLOND.mean(0), _DARK.mean(0))
    hair = np.where(amb[:, None], _MIDDLE + 0.2 * (mean - _MIDDLE), base)
    hair = np.clip(hair + rng.normal(0, 0.02, (n, 3)), 0, 1)
    tone = u[:, 0]
    beard = male & (u[:, 1] < 0.7)
    full = u[:, 2] < 0.4  # full beard rather than stubble
    return pd.DataFrame({
        "image": _image_names(n),
        "split": split, "blond": blond, "male": male, "young": young, "ambiguous": amb,
        "noisy": noisy, "drawn_blond": drawn, "shade": np.where(drawn, shade_b, shade_d),
        "long_hair": u[:, 3] < np.where(male, (1 - spurious) / 2, (1 + spurious) / 2),
        "beard": beard, "full_beard": beard & full,
        "wrinkles": np.where(young, u[:, 4] < 0.05, u[:, 4] < 0.9),
        "streaks": np.where(young, u[:, 5] < 0.02, u[:, 5] < 0.6),
        "smiling": u[:, 6] < 0.5, "pale": tone < 0.15,
        "cx": (u[:, 7] - 0.5) * 0.16, "cy": 0.05 + (u[:, 8] - 0.5) * 0.12,
        "scale": 0.9 + 0.2 * u[:, 9], "width": np.where(young, 1.0, 1.07),
        "mouth_h": np.where(u[:, 6] < 0.5, 0.11, 0.06),
        "beard_strength": np.where(beard, np.where(full, 0.85, 0.45), 0.0),
        "gain": 0.9 + 0.2 * u[:, 10], "light_slope": (u[:, 11] - 0.5) * 0.3,
        "phase": rng.random(n) * 2 * np.pi, "noise": 0.01 + 0.03 * rng.random(n),
        "hair_r": hair[:, 0], "hair_g": hair[:, 1], "hair_b": hair[:, 2], "skin_t": tone,
        "bg_r": rng.uniform(0.1, 0.9, n), "bg_g": rng.uniform(0.1, 0.9, n),
        "bg_b": rng.uniform(0.1, 0.9, n),
    })  # fmt: skip


def _attribute_table(plan: pd.DataFrame) -> np.ndarray:
    """The 40 CelebA attributes (-1/1) implied by the plan, in the official order."""
    dark = ~plan["blond"].to_numpy()
    drawn = {
        "Blond_Hair": plan["blond"], "Male": plan["male"], "Young": plan["young"],
        "Black_Hair": dark & (plan["shade"] == 0) & ~plan["ambiguous"],
        "Brown_Hair": dark & (plan["ambiguous"] | plan["shade"].isin([1, 2])),
        "Gray_Hair": plan["streaks"], "No_Beard": ~plan["beard"],
        "5_o_Clock_Shadow": plan["beard"] & ~plan["full_beard"],
        "Mustache": plan["full_beard"], "Smiling": plan["smiling"],
        "Mouth_Slightly_Open": plan["smiling"], "Pale_Skin": plan["pale"],
    }  # fmt: skip
    table = -np.ones((len(plan), len(CELEBA_ATTRIBUTES)), np.int8)
    for name, values in drawn.items():
        table[:, CELEBA_ATTRIBUTES.index(name)] = np.where(np.asarray(values, bool), 1, -1)
    return table


def _render_chunk(task: tuple) -> None:
    """Draw and write one chunk of images (and masks); runs in a worker process."""
    index, plan, out, size, seed, masks = task
    rng = np.random.default_rng([seed, 1, index])  # pixel noise depends on chunk only
    params = {c: plan[c].to_numpy() for c in plan.columns}
    skin_t = params["skin_t"][:, None]
    params["skin_rgb"] = _SKIN[0] * (1 - skin_t) + _SKIN[1] * skin_t
    params["hair_rgb"] = plan[["hair_r", "hair_g", "hair_b"]].to_numpy()
    params["bg_rgb"] = plan[["bg_r", "bg_g", "bg_b"]].to_numpy()
    images, concepts = render_faces(params, size, rng)
    for name, pixels, code in zip(plan["image"], images, concepts):
        # Fixed quality and 4:4:4 chroma: deterministic bytes, hair hue kept intact.
        Image.fromarray(pixels).save(out / IMAGE_DIR / name, "JPEG", quality=95, subsampling=0)
        if masks:
            Image.fromarray(code, "L").save(out / "masks" / (Path(name).stem + ".png"))


def generate_synthetic_faces(
    out_dir: str | Path,
    *,
    n: int = 20000,
    image_size: int = 64,
    seed: int = 0,
    spurious: float = 0.8,
    ambiguous: float = 0.3,
    label_noise: float = 0.02,
    joint: Mapping[tuple[bool, bool, bool], float] | Sequence[Sequence] | None = None,
    split_fractions: Sequence[float] = (0.8, 0.1, 0.1),
    masks: bool = True,
    workers: int | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a CelebA-format folder of synthetic faces with a planted compression harm.

    Parameters
    ----------
    out_dir
        Folder to write: absent, empty, or (with ``overwrite``) one this function wrote
        before. Any other folder is refused and left untouched: the function marks its
        folders with a :data:`MARKER` file and never deletes data it did not create.
    n, image_size, seed
        Number of images, their side in pixels, and the seed of everything drawn.
    spurious
        Strength in [0, 1) of the link between gender and hair length: men's hair is
        long with probability ``(1 - spurious) / 2``, women's ``(1 + spurious) / 2``.
    ambiguous
        Share of every (Blond_Hair, Male, Young) group with ambiguous hair colour.
    label_noise
        Share of images whose drawn hair class contradicts the annotation.
    joint
        Weights of the (Blond_Hair, Male, Young) groups, keyed by those tuples or as
        rows ``[blond, male, young, weight]`` (a spec's ``[data].options.joint``);
        default CelebA's test split.
    split_fractions
        Train, valid, test shares (stratified by group and ambiguity).
    masks
        Also write ``masks/<stem>.png`` concept maps and ``masks/concepts.csv``.
    workers
        Processes drawing images; default one per CPU. Does not change the output.
    overwrite
        Replace the files of an earlier generation in ``out_dir`` (only the files it
        wrote; anything else there is kept, and a link is removed, never followed).

    Returns
    -------
    Path
        ``out_dir``, readable with ``CelebA(out_dir)``.

    Examples
    --------
    >>> import tempfile
    >>> from compaudit.data.celeba import CelebA
    >>> root = generate_synthetic_faces(f"{tempfile.mkdtemp()}/faces", n=200)
    >>> sum(len(CelebA(root, split=s)) for s in ("train", "valid", "test"))
    200
    """
    joint = CELEBA_TEST_JOINT if joint is None else _joint_mapping(joint)
    _check_args(n, image_size, spurious, ambiguous, label_noise, joint, split_fractions)
    out = Path(out_dir)
    settings = {"n": int(n), "image_size": int(image_size), "seed": seed,
                "spurious": spurious, "ambiguous": ambiguous, "label_noise": label_noise,
                "joint": [[*map(bool, k), float(v)] for k, v in joint.items()],
                "split_fractions": list(split_fractions), "masks": bool(masks)}
    earlier = claim_folder(out, marker=MARKER, generator=_GENERATOR, overwrite=overwrite)
    if earlier is not None:  # a folder of ours: remove only what that generation wrote
        old = _own_files(earlier, where=out / MARKER)
        replace_owned_files(out, old, _own_files(settings))
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, MARKER, _GENERATOR, settings)  # first: a killed run stays ours
    (out / IMAGE_DIR).mkdir(exist_ok=True)
    if masks:
        (out / "masks").mkdir(exist_ok=True)

    rng = np.random.default_rng(seed)
    plan = _plan(n, rng, spurious=spurious, ambiguous=ambiguous, label_noise=label_noise,
                 joint=joint, split_fractions=split_fractions)
    tasks = [(i // _CHUNK, plan.iloc[i : i + _CHUNK], out, image_size, seed, masks)
             for i in range(0, n, _CHUNK)]
    workers = min(workers or os.cpu_count() or 1, len(tasks))
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            list(pool.map(_render_chunk, tasks))
    else:
        for task in tasks:
            _render_chunk(task)

    names, table = plan["image"].to_numpy(), _attribute_table(plan)
    rows = [name + "".join(f" {v:2d}" for v in values) for name, values in zip(names, table)]
    (out / "list_attr_celeba.txt").write_text(
        f"{n}\n{' '.join(CELEBA_ATTRIBUTES)} \n" + "\n".join(rows) + "\n"
    )
    codes = plan["split"].map({name: code for code, name in enumerate(_SPLITS)})
    (out / "list_eval_partition.txt").write_text(
        "".join(f"{name} {code}\n" for name, code in zip(names, codes))
    )
    if masks:
        pd.DataFrame({"code": range(len(CONCEPTS)), "concept": CONCEPTS}).to_csv(
            out / "masks" / "concepts.csv", index=False
        )
    meta = ["image", "split", "blond", "male", "young", "ambiguous", "noisy", "drawn_blond",
            "long_hair", "beard", "wrinkles", "streaks"]
    plan[meta].to_csv(out / "synthetic_meta.csv", index=False)
    (out / "synthetic.json").write_text(json.dumps(settings, indent=2, sort_keys=True) + "\n")
    return out


def concept_table(root: str | Path) -> pd.DataFrame:
    """The ``code, concept`` table of the masks under ``root`` (``masks/concepts.csv``)."""
    path = find_celeba_root(Path(root)) / "masks" / "concepts.csv"
    if not path.is_file():
        raise AuditInputError(f"{path}: concept table not found; generate the dataset with "
                              "masks=True (generate_synthetic_faces)")
    return pd.read_csv(path)


def load_concept_mask(root: str | Path, example_id: str) -> np.ndarray:
    """The ``(H, W)`` uint8 concept-code map of one example (codes: :func:`concept_table`).

    ``example_id`` is the ``celeba/<file>`` id of ``examples.parquet`` or the file name.
    """
    name = example_id.split("/", 1)[1] if example_id.startswith("celeba/") else example_id
    path = find_celeba_root(Path(root)) / "masks" / (Path(name).stem + ".png")
    if not path.is_file():
        raise AuditInputError(f"{path}: no concept mask for example {example_id!r}; masks "
                              "exist only for synthetic data generated with masks=True")
    with Image.open(path) as mask:
        return np.asarray(mask, dtype=np.uint8).copy()


@register_dataset("synthetic-faces")
class SyntheticFaces(CelebA):
    """The synthetic faces: :class:`~compaudit.data.celeba.CelebA` files that a run
    generates into ``[data].root`` with :func:`generate_synthetic_faces`, whose
    arguments (``n``, ``spurious``, ``joint``, ...) are the spec's ``[data].options``."""

    generator = staticmethod(generate_synthetic_faces)
    generated_marker = "list_attr_celeba.txt"

    @classmethod
    def check_generator_options(cls, options: Mapping, *, image_size: int) -> None:
        """Raise :class:`AuditInputError` for generator arguments the generator would
        refuse (checked before anything runs)."""
        import inspect

        args = {name: p.default for name, p
                in inspect.signature(generate_synthetic_faces).parameters.items()
                if p.default is not inspect.Parameter.empty}
        args.update(options, image_size=image_size)
        joint = CELEBA_TEST_JOINT if args["joint"] is None else _joint_mapping(args["joint"])
        try:
            _check_args(args["n"], image_size, args["spurious"], args["ambiguous"],
                        args["label_noise"], joint, args["split_fractions"])
        except TypeError:  # a comparison of a string or table with a number
            raise AuditInputError(
                "generate_synthetic_faces: expected numbers for n, spurious, ambiguous and "
                f"label_noise and a list for split_fractions; got {dict(options)!r}") from None
