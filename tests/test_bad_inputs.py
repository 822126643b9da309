"""A corpus of bad inputs: each is refused with exit code 2 and one clear line.

Every case runs the real command line in a scratch folder and asserts: exit code 2,
every stderr line starts with ``compaudit: error:``, no traceback, the message names the
file (or option) and the field, and nothing outside the case's output folder was
created or changed (the inputs, the working directory). Pickle-shaped inputs carry a
payload that would create a sentinel file; it must not exist afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from compaudit.cli import main

SENTINEL = "PWNED"


class _Payload:
    """Unpickling this runs ``open(sentinel, "w")``: the side effect we must not see."""

    def __init__(self, target: Path) -> None:
        self.target = str(target)

    def __reduce__(self):
        return (open, (self.target, "w"))


# --- inputs ------------------------------------------------------------------------------


def _tables(root: Path) -> tuple[Path, Path]:
    """A valid binary audit: 40 examples, dense and gmp-90 with two replicas each."""
    rng = np.random.default_rng(0)
    n = 40
    ids = [f"ex{i:03d}" for i in range(n)]
    labels = rng.integers(0, 2, n)
    examples = pd.DataFrame({"example_id": ids, "label": labels,
                             "attr.Male": rng.integers(0, 2, n).astype(bool),
                             "attr.Young": rng.integers(0, 2, n).astype(bool)})
    rows = []
    for variant in ("dense", "gmp-90"):
        for replica in (0, 1):
            p = rng.uniform(0.05, 0.95, n)
            for i in range(n):
                rows.append({"variant": variant, "replica": replica, "example_id": ids[i],
                             "pred": int(p[i] > 0.5), "p_pos": p[i],
                             "p_true": p[i] if labels[i] == 1 else 1 - p[i]})
    ex, pr = root / "examples.csv", root / "predictions.csv"
    examples.to_csv(ex, index=False)
    pd.DataFrame(rows).to_csv(pr, index=False)
    return ex, pr


def _analyze(ex: Path, pr: Path, out: Path, *extra: str) -> list[str]:
    return ["analyze", "--examples", str(ex), "--predictions", str(pr), "--out", str(out),
            "--bootstrap", "20", "--no-progress", *extra]


def _edit_csv(path: Path, change: Callable[[pd.DataFrame], pd.DataFrame]) -> None:
    change(pd.read_csv(path)).to_csv(path, index=False)


def _valid_run(root: Path) -> Path:
    """A run folder with a valid metrics.json (from the real analysis)."""
    ex, pr = _tables(root)
    run = root / "run"
    assert main(_analyze(ex, pr, run, "--protected", "Male,Young")) == 0
    return run


GENERATOR_OPTIONS = "options = { n = 200 }\n"  # the synthetic faces' (drop for others)
TINY_SPEC = """
[audit]
name = "tiny"
[data]
dataset = "synthetic-faces"
root = "data/faces"
image_size = 32
options = { n = 200 }
[model]
replicas = 1
[train]
epochs = 1
[[variants]]
name = "f16"
method = "float16"
[executor]
kind = "serial"
"""


def _spec(root: Path, text: str, name: str = "spec.toml") -> Path:
    path = root / name
    path.write_text(text)
    return path


def _run(spec: Path, out: Path, *extra: str) -> list[str]:
    return ["run", str(spec), "--out", str(out), "--no-progress", *extra]


# --- the corpus: (id, setup(root, out) -> argv, substrings the error must contain) -------

Case = tuple[str, Callable[[Path, Path], list[str]], tuple[str, ...]]


def _table_cases() -> list[Case]:
    def edit(which: int, change: Callable[[pd.DataFrame], pd.DataFrame]):
        def setup(root: Path, out: Path) -> list[str]:
            files = _tables(root)
            _edit_csv(files[which], change)
            return _analyze(*files, out)
        return setup

    def raw(which: int, text: str | bytes):
        def setup(root: Path, out: Path) -> list[str]:
            files = _tables(root)
            (files[which].write_bytes if isinstance(text, bytes) else files[which].write_text)(
                text)
            return _analyze(*files, out)
        return setup

    def missing(which: int):
        def setup(root: Path, out: Path) -> list[str]:
            files = list(_tables(root))
            files[which].unlink()
            return _analyze(*files, out)
        return setup

    def set_col(col, value, rows=slice(0, 1)):
        def change(df):
            df[col] = df[col].astype(object)
            df.loc[df.index[rows], col] = value
            return df
        return change

    E, P = 0, 1
    return [
        ("examples-missing", missing(E), ("examples.csv",)),
        ("predictions-missing", missing(P), ("predictions.csv",)),
        ("examples-no-label", edit(E, lambda d: d.drop(columns="label")), ("examples.csv", "label")),
        ("examples-no-id", edit(E, lambda d: d.drop(columns="example_id")),
         ("examples.csv", "example_id")),
        ("examples-duplicate-id", edit(E, set_col("example_id", "ex001")),
         ("examples.csv", "example_id")),
        ("examples-label-text", edit(E, set_col("label", "cat")), ("examples.csv", "label")),
        ("examples-label-negative", edit(E, set_col("label", -1)), ("examples.csv", "label")),
        ("examples-label-huge", edit(E, set_col("label", 2**40)), ("label",)),
        ("examples-empty-file", raw(E, ""), ("examples.csv",)),
        ("examples-header-only", raw(E, "example_id,label\n"), ("examples.csv",)),
        ("examples-not-utf8-attribute",
         raw(E, b"example_id,label,attr.Male\nex000,1,\xff\xfe\n"), ("examples.csv", "attr.Male")),
        ("examples-not-utf8-id", raw(E, b"example_id,label\n\xff\xfeab,1\n"),
         ("examples.csv", "example_id")),
        ("examples-binary-garbage", raw(E, bytes(range(256)) * 4), ("examples.csv",)),
        ("predictions-p-true-above-1", edit(P, set_col("p_true", 1.5)),
         ("predictions.csv", "p_true")),
        ("predictions-p-true-nan", edit(P, set_col("p_true", float("nan"))),
         ("predictions.csv", "p_true")),
        ("predictions-p-pos-negative", edit(P, set_col("p_pos", -0.2)),
         ("predictions.csv", "p_pos")),
        ("predictions-pred-text", edit(P, set_col("pred", "yes")), ("predictions.csv", "pred")),
        ("predictions-pred-out-of-range", edit(P, set_col("pred", 7)),
         ("predictions.csv", "pred")),
        ("predictions-unknown-example", edit(P, set_col("example_id", "nope")),
         ("predictions.csv", "example_id")),
        ("predictions-no-dense", edit(P, lambda d: d[d.variant != "dense"]),
         ("predictions.csv", "dense")),
        ("predictions-duplicate-rows", edit(P, lambda d: pd.concat([d, d.head(3)])),
         ("predictions.csv",)),
        ("predictions-no-variant", edit(P, lambda d: d.drop(columns="variant")),
         ("predictions.csv", "variant")),
        ("predictions-replica-text", edit(P, set_col("replica", "first")),
         ("predictions.csv", "replica")),
        ("predictions-not-utf8", raw(P, b"variant,replica,example_id,pred,p_true\n\xff,0,ex000,1,0.5\n"),
         ("predictions.csv",)),
        ("predictions-pickle-as-parquet", lambda root, out: _pickle_table(root, out),
         ("predictions.parquet",)),
    ]


def _pickle_table(root: Path, out: Path) -> list[str]:
    ex, _ = _tables(root)
    bad = root / "predictions.parquet"
    bad.write_bytes(pickle.dumps(_Payload(root / SENTINEL)))
    return _analyze(ex, bad, out)


def _option_cases() -> list[Case]:
    def opts(*extra: str):
        def setup(root: Path, out: Path) -> list[str]:
            return _analyze(*_tables(root), out, *extra)
        return setup

    def out_is(kind: str):
        def setup(root: Path, out: Path) -> list[str]:
            files = _tables(root)
            if kind == "file":
                out.write_text("mine")
                target = out
            elif kind == "below-file":
                out.write_text("mine")
                target = out / "sub"
            else:  # metrics.json is a folder
                (out / "metrics.json").mkdir(parents=True)
                target = out
            return _analyze(*files, target)
        return setup

    return [
        ("option-bootstrap-negative", opts("--bootstrap", "-1"), ("--bootstrap",)),
        ("option-seed-negative", opts("--seed", "-1"), ("--seed",)),
        ("option-protected-twice", opts("--protected", "Male,Male"), ("--protected", "Male")),
        ("option-protected-unknown", opts("--protected", "Shoe"), ("Shoe",)),
        ("option-num-classes-1", opts("--num-classes", "1"), ("--num-classes",)),
        ("option-positive-label-5", opts("--positive-label", "5"), ("--positive-label",)),
        ("option-shift-unknown", opts("--shift", "fog"), ("fog",)),
        ("option-dense-unknown", opts("--dense", "base"), ("base",)),
        ("option-max-order-0", opts("--max-order", "0"), ("--max-order",)),
        ("option-dissection-alone", opts("--dissection", "units.csv"), ("--dissection",)),
        ("out-is-a-file", out_is("file"), ("out",)),
        ("out-below-a-file", out_is("below-file"), ("out",)),
        ("out-metrics-is-a-folder", out_is("folder"), ("metrics.json",)),
    ]


def _spec_cases() -> list[Case]:
    def spec(text: str, *extra: str):
        def setup(root: Path, out: Path) -> list[str]:
            return _run(_spec(root, text), out, *extra)
        return setup

    def replace(old: str, new: str, *extra: str):
        assert old in TINY_SPEC
        return spec(TINY_SPEC.replace(old, new, 1), *extra)

    def add(text: str):
        return spec(TINY_SPEC + text)

    def raw(data: bytes):
        def setup(root: Path, out: Path) -> list[str]:
            path = root / "spec.toml"
            path.write_bytes(data)
            return _run(path, out)
        return setup

    gmp = ('[[variants]]\nname = "g"\nmethod = "gradual_magnitude"\nbegin_step = 0\n'
           'end_step = 10\nfrequency = 2\n')
    return [
        ("spec-missing", lambda root, out: _run(root / "none.toml", out), ("none.toml",)),
        ("spec-not-toml", spec("[data\nroot = 3"), ("spec.toml", "TOML")),
        ("spec-not-utf8", raw(b'[audit]\nname = "\xff\xfe"\n'), ("spec.toml", "UTF-8")),
        ("spec-unknown-section", add("[extras]\nx = 1\n"), ("spec.toml", "[extras]")),
        ("spec-unknown-key", replace("image_size = 32", "image_size = 32\ncolour = 3"), ("[data].colour",)),
        ("spec-wrong-type", replace("image_size = 32", 'image_size = "big"'),
         ("[data].image_size",)),
        ("spec-replicas-0", replace("replicas = 1", "replicas = 0"), ("[model].replicas",)),
        ("spec-sparsity-1.5", add(gmp + "sparsity = 1.5\n"), ("#2.sparsity",)),
        ("spec-scope-unknown", add(gmp + 'sparsity = 0.5\nscope = "net"\n'), ("#2.scope",)),
        ("spec-method-unknown", add('[[variants]]\nname = "q"\nmethod = "int4"\n'),
         ("#2.method", "int4")),
        ("spec-unit-fraction-and-count",
         add('[[variants]]\nname = "u"\nmethod = "unit"\nfraction = 0.5\ncount = 2\n'),
         ("#2", "exactly one of fraction")),
        ("spec-backend-unknown",
         add('[[variants]]\nname = "q"\nmethod = "int8_static"\nbackend = "tensorrt"\n'),
         ("#2.backend",)),
        ("spec-variant-traversal", replace('name = "f16"', 'name = "../../x"'),
         ("#1.name", "../../x")),
        ("spec-variant-duplicate", add('[[variants]]\nname = "f16"\nmethod = "bfloat16"\n'),
         ("#2.name", "twice")),
        ("spec-variant-dense", replace('name = "f16"', 'name = "dense"'), ("#1.name",)),
        ("spec-audit-traversal", replace('name = "tiny"', 'name = "../../x"'),
         ("[audit].name", "../../x")),
        ("spec-audit-absolute", replace('name = "tiny"', 'name = "/tmp/x"'), ("[audit].name",)),
        ("spec-lr-negative", replace("epochs = 1", "epochs = 1\nlr = -0.1"), ("[train].lr",)),
        ("spec-device-unknown", replace("epochs = 1", 'epochs = 1\ndevice = "gpu!"'),
         ("[train].device",)),
        ("spec-executor-unknown", replace('kind = "serial"', 'kind = "threads"'),
         ("[executor].kind",)),
        ("spec-alpha-2", add("[analysis]\nalpha = 2\n"), ("[analysis].alpha",)),
        ("spec-gate-level-2", add("[gate]\nlevel = 2\n"), ("[gate].level",)),
        ("spec-gate-metric-unknown", add("[gate.subgroup_rate]\nmetrics = ['fpx']\n"),
         ("[gate.subgroup_rate].metrics",)),
        ("spec-dissection-quantile", add("[dissection]\nquantile = 1.5\n"),
         ("[dissection].quantile",)),
        ("spec-severity-6", add('[[shifts]]\ncorruptions = ["fog"]\nseverities = [6]\n'),
         ("[[shifts]] #1.severities",)),
        ("spec-weights-count", replace("replicas = 1", 'replicas = 2\nweights = ["a.pt"]'),
         ("[model].weights",)),
        ("spec-splits-sum", replace("n = 200", "n = 200, split_fractions = [0.5, 0.5, 0.5]"),
         ("[data].options", "split_fractions")),
        ("spec-arch-unknown", replace("replicas = 1", 'replicas = 1\narch = "mystery"'),
         ("[model].arch", "mystery")),
        ("spec-dataset-unknown", replace('dataset = "synthetic-faces"', 'dataset = "mnist"'),
         ("[data].dataset", "mnist")),
        ("spec-root-missing",
         replace('dataset = "synthetic-faces"\nroot = "data/faces"',
                 'dataset = "celeba"\nroot = "/nonexistent/celeba"'), ("[data].root",)),
        ("spec-ray-address-serial", spec(TINY_SPEC, "--ray-address", "127.0.0.1:1"),
         ("--ray-address",)),
        ("spec-end-step-beyond-the-run", add(gmp + "sparsity = 0.5\n"),
         ("#2.end_step: got 10", "optimizer steps")),
    ]


def _gate_cases() -> list[Case]:
    def gate(edit: Callable[[dict], dict] | None = None, *extra_fn: Callable[[Path], list[str]]):
        def setup(root: Path, out: Path) -> list[str]:
            run = _valid_run(root)
            if edit is not None:
                metrics = json.loads((run / "metrics.json").read_text())
                (run / "metrics.json").write_text(json.dumps(edit(metrics)))
            extra = [a for fn in extra_fn for a in fn(root)]
            return ["gate", str(run), "--out", str(out), *extra]
        return setup

    def baseline(doc: dict | None):
        def fn(root: Path) -> list[str]:
            path = root / "old.json"
            path.write_text(json.dumps(doc))
            return ["--baseline", str(path)]
        return fn

    def policy(text: str | None):
        def fn(root: Path) -> list[str]:
            path = root / "policy.toml"
            if text is not None:
                path.write_text(text)
            return ["--policy", str(path)]
        return fn

    def no_metrics(root: Path, out: Path) -> list[str]:
        run = _valid_run(root)
        (run / "metrics.json").unlink()
        return ["gate", str(run), "--out", str(out)]

    def broken_json(root: Path, out: Path) -> list[str]:
        run = _valid_run(root)
        (run / "metrics.json").write_text("{not json")
        return ["gate", str(run), "--out", str(out)]

    def out_file(root: Path, out: Path) -> list[str]:
        run = _valid_run(root)
        out.write_text("mine")
        return ["gate", str(run), "--out", str(out)]

    def drop_field(m: dict) -> dict:
        for row in m["deltas"]:
            row.pop("metric", None)
        return m

    return [
        ("gate-no-metrics", no_metrics, ("metrics.json",)),
        ("gate-metrics-not-json", broken_json, ("metrics.json", "JSON")),
        ("gate-schema-only", gate(lambda m: {"schema": m["schema"]}), ("variants",)),
        ("gate-schema-9", gate(lambda m: {**m, "schema": "compaudit.metrics/9"}),
         ("metrics.json", "schema")),
        ("gate-baseline-other-schema", gate(None, baseline({"schema": "x/1"})),
         ("old.json", "schema")),
        ("gate-baseline-empty", gate(None, baseline({})), ("old.json", "schema")),
        ("gate-baseline-no-variants", gate(None, lambda root: _baseline_without(root)),
         ("baseline", "gmp-90")),
        ("gate-policy-missing", gate(None, policy(None)), ("policy.toml",)),
        ("gate-policy-unknown-key", gate(None, policy("[gate]\nlevell = 0.9\n")),
         ("policy.toml", "levell")),
        ("gate-policy-unknown-variant",
         gate(None, policy('[gate]\nvariants = ["gmp-99"]\n[gate.subgroup_rate]\n')),
         ("gmp-99",)),
        ("gate-policy-matches-nothing",
         gate(None, policy("[gate]\n[gate.robustness]\nmax_accuracy_drop = 0.02\n")),
         ("[gate.robustness]", "no gate check")),
        ("gate-out-is-a-file", out_file, ("gate output folder",)),
        ("gate-row-missing-field", gate(drop_field), ("metrics", "metric")),
        ("report-schema-9",
         lambda root, out: _report_with(root, lambda m: {**m, "schema": "compaudit.metrics/9"}),
         ("metrics.json", "schema")),
    ]


def _baseline_without(root: Path) -> list[str]:
    (root / "b").mkdir()
    run = _valid_run(root / "b")
    metrics = json.loads((run / "metrics.json").read_text())
    metrics["variants"] = {"dense": metrics["variants"]["dense"]}
    path = root / "old.json"
    path.write_text(json.dumps(metrics))
    return ["--baseline", str(path)]


def _report_with(root: Path, edit: Callable[[dict], dict]) -> list[str]:
    run = _valid_run(root)
    metrics = json.loads((run / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps(edit(metrics)))
    return ["report", str(run), "--no-progress"]


def _file_cases() -> list[Case]:
    def weights(write: Callable[[Path], None]):
        def setup(root: Path, out: Path) -> list[str]:
            path = root / "replica.pt"
            write(path)
            text = TINY_SPEC.replace("replicas = 1", f'replicas = 1\nweights = ["{path}"]')
            return _run(_spec(root, text), out)
        return setup

    def malicious_weights(path: Path) -> None:
        import torch

        torch.save({"state": _Payload(path.parent / SENTINEL)}, path)

    def whole_model(path: Path) -> None:
        import torch

        torch.save(torch.nn.Linear(2, 2), path)

    def cifar(write: Callable[[Path], None]):
        def setup(root: Path, out: Path) -> list[str]:
            folder = root / "cifar-10-batches-py"
            folder.mkdir()
            write(folder)
            text = (TINY_SPEC.replace('dataset = "synthetic-faces"\nroot = "data/faces"',
                                      f'dataset = "cifar10"\nroot = "{root}"\nprotected = []')
                    .replace("[model]", "[model]\nnum_classes = 10")
                    .replace(GENERATOR_OPTIONS, ""))
            return _run(_spec(root, text), out)
        return setup

    def malicious_batch(folder: Path) -> None:
        for name in ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4",
                     "data_batch_5", "test_batch"):
            (folder / name).write_bytes(pickle.dumps(_Payload(folder.parent / SENTINEL)))
        (folder / "batches.meta").write_bytes(pickle.dumps(_Payload(folder.parent / SENTINEL)))

    def celeba_bad(root: Path, out: Path) -> list[str]:
        folder = root / "celeba"
        (folder / "img_align_celeba").mkdir(parents=True)
        (folder / "list_attr_celeba.txt").write_text("1\nBlond_Hair Male Young\n000001.jpg 1 x 1\n")
        (folder / "list_eval_partition.txt").write_text("000001.jpg 2\n")
        text = TINY_SPEC.replace('dataset = "synthetic-faces"\nroot = "data/faces"',
                                 f'dataset = "celeba"\nroot = "{folder}"'
                                 ).replace(GENERATOR_OPTIONS, "")
        return _run(_spec(root, text), out)

    def foreign_faces(root: Path, out: Path) -> list[str]:
        folder = root / "my-photos"
        (folder / "img_align_celeba").mkdir(parents=True)
        (folder / "img_align_celeba" / "000001.jpg").write_bytes(b"my precious photo")
        (folder / "list_attr_celeba.txt").write_text("my attributes\n")
        text = TINY_SPEC.replace('root = "data/faces"', f'root = "{folder}"')
        return _run(_spec(root, text), out)

    def stages_corrupt(root: Path, out: Path) -> list[str]:
        out.mkdir()
        (out / "stages.json").write_text("{oops")
        return _run(_spec(root, TINY_SPEC), out)

    return [
        ("weights-malicious-pickle", weights(malicious_weights), ("replica.pt",)),
        ("weights-whole-model", weights(whole_model), ("replica.pt",)),
        ("weights-garbage", weights(lambda p: p.write_bytes(b"\x00garbage" * 10)),
         ("replica.pt",)),
        ("cifar-malicious-batch", cifar(malicious_batch), ("cifar-10-batches-py",)),
        ("celeba-bad-attribute-value", celeba_bad, ("list_attr_celeba.txt",)),
        ("synthetic-root-foreign-folder", foreign_faces, ("my-photos",)),
        ("stages-json-corrupt", stages_corrupt, ("stages.json",)),
    ]


CASES = _table_cases() + _option_cases() + _spec_cases() + _gate_cases() + _file_cases()


def _snapshot(folder: Path, skip: Path) -> dict[str, str]:
    """Every file under ``folder`` (but ``skip``) with a hash of its bytes."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and skip not in path.parents and path != skip:
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def test_the_corpus_is_large_and_its_ids_unique():
    ids = [case[0] for case in CASES]
    assert len(ids) >= 80 and len(set(ids)) == len(ids)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_cleanly(case, tmp_path, monkeypatch, capsys):
    name, setup, expected = case
    inputs, cwd, out = tmp_path / "inputs", tmp_path / "cwd", tmp_path / "inputs" / "out"
    inputs.mkdir()
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    argv = setup(inputs, out)
    capsys.readouterr()
    before = _snapshot(inputs, out)
    code = main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert lines and all(line.startswith("compaudit: error: ") for line in lines), err
    assert "Traceback" not in err
    for text in expected:
        assert text in err, f"{text!r} not named in: {err}"
    assert _snapshot(inputs, out) == before, "an input was created or changed"
    assert not any(cwd.iterdir()), "something was written to the working directory"
    assert not (inputs / SENTINEL).exists() and not os.path.exists(cwd / SENTINEL)


def test_user_strings_reach_the_report_escaped(tmp_path):
    """An XSS payload in every user string that reaches the report stays text."""
    from html.parser import HTMLParser

    payload = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    ex, pr = _tables(tmp_path)
    examples = pd.read_csv(ex)
    examples["example_id"] = [f"{payload}{i}" for i in range(len(examples))]
    examples = examples.rename(columns={"attr.Male": f"attr.{payload}"})
    examples["attr.Young"] = np.where(examples["attr.Young"], payload, "other")
    examples.to_csv(ex, index=False)
    predictions = pd.read_csv(pr)
    predictions["example_id"] = [f"{payload}{int(i[2:])}" for i in predictions["example_id"]]
    predictions["variant"] = predictions["variant"].replace("gmp-90", payload)
    predictions.to_csv(pr, index=False)
    run = tmp_path / "run"
    assert main(_analyze(ex, pr, run)) == 0
    assert main(["report", str(run), "--no-progress"]) == 0

    class Tags(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.scripts, self.handlers = [], []

        def handle_starttag(self, tag, attrs):
            if tag == "script":
                self.scripts.append(attrs)
            self.handlers += [name for name, _ in attrs if name.startswith("on")]

    page = (run / "report.html").read_text()
    tags = Tags()
    tags.feed(page)
    assert "alert(1)" in page  # the payload is shown, as text
    assert not tags.handlers, "an event handler attribute came from user data"
    # The report's own scripts carry no user text; none was injected.
    assert all("alert" not in str(attrs) for attrs in tags.scripts)
    assert "<script>alert(1)" not in page and 'onerror="alert(2)"' not in page
