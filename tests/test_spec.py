"""Audit specs: every shipped spec parses; every mistake is reported at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import tomllib
import torch

from compaudit.configs.compress import METHODS, GradualMagnitudeConfig
from compaudit.errors import AuditInputError
from compaudit.spec import demo_spec, load_spec, parse_spec

AUDITS = Path(__file__).resolve().parents[1] / "audits"
# own_model.toml names the team's files; tests/test_own_model.py makes them and runs it.
SPECS = sorted(p for p in AUDITS.glob("*.toml") if p.name != "own_model.toml")


def _as_toml(value):
    """A parsed value as TOML reads it: tuples (nested too) back to lists."""
    return [_as_toml(v) for v in value] if isinstance(value, tuple) else value


@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.name)
def test_shipped_specs_build_every_stage_config_from_their_tables(path):
    spec = load_spec(path)
    doc = tomllib.loads(path.read_text())  # the reference: the TOML as written
    assert [v.name for v in spec.variants] == [v["name"] for v in doc["variants"]]
    for variant, table in zip(spec.variants, doc["variants"]):
        assert type(variant.config) is METHODS.get(table["method"]).config
        for key, value in table.items():
            if key not in ("name", "method"):
                assert _as_toml(getattr(variant.config, key)) == value, key
    for section in ("data", "model", "train"):
        for key, value in doc.get(section, {}).items():
            assert _as_toml(getattr(getattr(spec, section), key)) == value, (section, key)
    assert spec.analysis.bootstrap == doc.get("analysis", {}).get("bootstrap", 1000)
    assert spec.analysis.protected == tuple(doc["data"]["protected"])
    assert spec.train.seed == doc.get("audit", {}).get("seed", 0)


def test_parsing_the_shipped_specs_imports_no_torch():
    code = ("import sys\nfrom compaudit.spec import load_spec\n"
            + "".join(f"load_spec({str(p)!r})\n" for p in SPECS)
            + "print(sorted(m for m in sys.modules if m.split('.')[0] in "
              "('torch', 'torchvision')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("module", ["compaudit", "compaudit.cli", "compaudit.configs.compress",
                                    "compaudit.configs.methods", "compaudit.configs.pruning",
                                    "compaudit.configs.quantization",
                                    "compaudit.configs.head", "compaudit.configs.train",
                                    "compaudit.configs.dissection"])
def test_the_package_the_command_line_and_the_configs_import_no_torch(module):
    code = (f"import sys, {module}\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('torch', 'torchvision')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def test_demo_spec_and_its_control():
    spec = demo_spec()
    assert spec.name == "demo" and spec.data.options["spurious"] == 0.8
    assert isinstance(spec.variants[1].config, GradualMagnitudeConfig)
    assert spec.variants[1].config.sparsity == 0.9
    control = demo_spec(spurious=False)
    assert control.name == "demo-control" and control.source == "compaudit/demo-control.toml"
    # The control file is the demo with spurious = 0 and nothing else changed.
    assert {**spec.section("data")["options"], "spurious": 0.0} \
        == control.section("data")["options"]
    assert spec.seed == control.seed
    for name in ("data", "model", "train", "executor", "predict", "dissection",
                 "analysis", "shifts", "variants", "gate"):
        mine, theirs = spec.section(name), control.section(name)
        if name == "data":
            mine, theirs = mine | {"options": None}, theirs | {"options": None}
        assert mine == theirs, name


def test_every_mistake_is_reported_with_file_and_key():
    text = """
[audit]
name = "x"
[data]
image_size = "big"
colour = 3
[model]
replicas = 0
[train]
optimizer = "adam"
[[variants]]
name = "dense"
method = "gradual_magnitude"
[[variants]]
name = "q"
method = "int4"
[gate]
level = 3
[extra]
"""
    with pytest.raises(AuditInputError) as exc:
        parse_spec(text, source="bad.toml")
    problems = exc.value.problems
    joined = "\n".join(problems)
    assert all(p.startswith("bad.toml: ") for p in problems)
    assert "[data].image_size: got 'big'; expected an integer" in joined
    assert "[data].colour: unknown key" in joined
    assert "[train].optimizer: got 'adam'; expected one of 'sgd', 'adamw'" in joined
    assert "[[variants]] #1.name: got 'dense'" in joined
    assert ("[[variants]] #2.method: got 'int4'; expected one of bfloat16, "
            "constrained_finetune, float16") in joined
    assert "[gate].level: got 3" in joined
    assert "unknown section [extra]" in joined
    assert len(problems) >= 7


def test_a_method_that_is_not_a_string_is_refused_with_the_valid_names():
    # Found by mypy: the name went straight into the registry's dict, so an unhashable
    # value (a TOML array) raised TypeError instead of a spec error.
    text = '[[variants]]\nname = "g"\nmethod = ["gradual_magnitude"]\n'
    with pytest.raises(AuditInputError) as exc:
        parse_spec(text, source="bad.toml")
    assert ("bad.toml: [[variants]] #1.method: got ['gradual_magnitude']; expected one of "
            "bfloat16, constrained_finetune, float16") in "\n".join(exc.value.problems)


def test_method_parameters_are_checked_by_the_method_config_at_parse_time():
    text = ('[[variants]]\nname = "g"\nmethod = "gradual_magnitude"\nsparsity = 1.5\n'
            'begin_step = 0\nend_step = 100\nfrequency = 10\nscope = "net"\n'
            '[[variants]]\nname = "u"\nmethod = "unit"\nfraction = 0.5\ncount = 2\n'
            '[[variants]]\nname = "h"\nmethod = "gradual_magnitude"\nsparsity = 0.5\n')
    with pytest.raises(AuditInputError) as exc:
        parse_spec(text, source="s.toml")
    problems = exc.value.problems
    assert "s.toml: [[variants]] #1.sparsity: got 1.5; expected a number in [0, 1)" in problems
    assert ("s.toml: [[variants]] #1.scope: got 'net'; expected one of 'global', 'layer'"
            in problems)
    assert any(p.startswith("s.toml: [[variants]] #2: give exactly one of fraction")
               for p in problems)
    assert "s.toml: [[variants]] #3: missing required key(s) frequency" in problems
    assert len(problems) == 4


def test_ranges_are_checked():
    text = ('[model]\nreplicas = 0\n[data]\nimage_size = 8\n'
            '[[variants]]\nname = "f"\nmethod = "float16"\n')
    with pytest.raises(AuditInputError) as exc:
        parse_spec(text, source="s.toml")
    joined = "\n".join(exc.value.problems)
    assert "s.toml: [model].replicas: got 0; expected an integer >= 1" in joined
    assert "s.toml: [data].image_size: got 8; expected an integer >= 16" in joined


def test_missing_spec_file(tmp_path):
    with pytest.raises(AuditInputError, match="audit spec not found"):
        load_spec(tmp_path / "nope.toml")


def test_dissection_section_is_optional_and_checked():
    base = '[[variants]]\nname = "f"\nmethod = "float16"\n'
    assert parse_spec(base, source="s.toml").dissection is None
    spec = parse_spec(base + '[dissection]\nquantile = 0.02\nlayers = ["features.11"]\n',
                      source="s.toml")
    assert spec.dissection.quantile == 0.02 and spec.dissection.layers == ("features.11",)
    assert spec.dissection.iou_threshold == 0.04 and spec.dissection.concepts == "synthetic-faces"
    bad = (base.replace('[[variants]]', '[model]\narch = "mystery"\n[[variants]]')
           + '[dissection]\nconcepts = "broden"\nquantile = 1.5\nmax_images = -1\n')
    with pytest.raises(AuditInputError) as exc:
        parse_spec(bad, source="s.toml")
    joined = "\n".join(exc.value.problems)
    assert "s.toml: [dissection].quantile: got 1.5; expected a number in (0, 1)" in joined
    assert "[dissection].max_images: got -1; expected an integer >= 0" in joined
    bad = bad.replace("quantile = 1.5\nmax_images = -1\n", "")
    with pytest.raises(AuditInputError) as exc:
        parse_spec(bad, source="s.toml")
    joined = "\n".join(exc.value.problems)
    assert "[dissection].root: missing; expected the Broden folder" in joined
    bad = bad.replace('concepts = "broden"\n', "")
    with pytest.raises(AuditInputError, match=r"\[dissection\].layers: expected module names "
                                              "of 'mystery'"):
        parse_spec(bad, source="s.toml")
    with pytest.raises(AuditInputError, match=r"\[dissection\].concepts: got 'masks'"):
        parse_spec(base + '[dissection]\nconcepts = "masks"\n', source="s.toml")


def test_pruning_schedules_in_fractions_of_the_fine_tuning_run():
    from compaudit.configs.compress import GradualMagnitudeConfig

    base = '[[variants]]\nname = "g"\nmethod = "gradual_magnitude"\nsparsity = 0.5\nfrequency = 5\n'
    spec = parse_spec(base + "begin = 0.1\nend = 0.8\n", source="s.toml")
    config = spec.variants[0].config
    assert not config.in_steps
    # 100 steps: updates from round(0.1 * 100) = 10 to round(0.8 * 100) = 80.
    run = config.for_run(100)
    assert (run.begin_step, run.end_step, run.in_steps) == (10, 80, True)
    assert config.for_run(3).end_step == 2  # round(2.4); never before begin + 1
    for extra, message in (("", "give begin_step and end_step"),
                           ("begin = 0.1\nend = 0.8\nbegin_step = 0\nend_step = 9\n",
                            "one pair"),
                           ("begin = 0.5\nend = 0.5\n", "#1.end: got 0.5")):
        with pytest.raises(AuditInputError, match=message):
            parse_spec(base + extra, source="s.toml")
    with pytest.raises(AuditInputError, match="end: got 1.5"):
        GradualMagnitudeConfig(sparsity=0.5, frequency=1, begin=0.0, end=1.5)


# --- model files -------------------------------------------------------------------------

def _demo_text() -> str:
    from importlib import resources

    return resources.files("compaudit").joinpath("demo.toml").read_text(encoding="utf-8")


def _tiny_onnx(path: Path) -> Path:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten()).eval()
    torch.onnx.export(model, (torch.zeros(1, 3, 32, 32),), path, dynamo=False)
    return path


def test_model_files_resolve_against_the_spec_folder_and_are_checked(tmp_path):
    folder = tmp_path / "audits"
    folder.mkdir()
    model = torch.nn.Linear(2, 2)
    torch.save(model.state_dict(), folder / "a.pt")
    torch.save(model.state_dict(), folder / "b.pt")
    text = _demo_text().replace("replicas = 5", 'replicas = 2\nweights = ["a.pt", "b.pt"]')
    (folder / "spec.toml").write_text(text)
    spec = load_spec(folder / "spec.toml")
    assert spec.model.weights == (str(folder / "a.pt"), str(folder / "b.pt"))
    (folder / "b.pt").write_bytes(b"")
    (folder / "a.pt").unlink()
    with pytest.raises(AuditInputError) as err:
        load_spec(folder / "spec.toml")
    assert len(err.value.problems) == 2
    assert all("[model].weights" in p for p in err.value.problems)
    assert "a.pt: model file not found" in str(err.value) and "b.pt: is empty" in str(err.value)


def test_a_dense_onnx_model_refuses_methods_that_need_torch_weights(tmp_path):
    _tiny_onnx(tmp_path / "dense.onnx")
    text = _demo_text().replace("replicas = 5", 'replicas = 1\nweights = ["dense.onnx"]')
    assert "[dissection]" in text  # the demo dissects its models
    (tmp_path / "spec.toml").write_text(text)
    with pytest.raises(AuditInputError) as err:
        load_spec(tmp_path / "spec.toml")
    methods = [p for p in err.value.problems if ".method: got" in p]
    assert len(methods) == len(tomllib.loads(_demo_text())["variants"])
    assert all("onnx files" in p and 'method = "load"' in p for p in methods)
    assert any(p.startswith(f"{tmp_path / 'spec.toml'}: [dissection]") for p in
               err.value.problems)


def test_a_pt2_program_is_refused_at_parse_time_with_the_reason(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 2, 3)).eval()
    program = torch.export.export(model, (torch.zeros(1, 3, 8, 8),))
    torch.export.save(program, tmp_path / "dense.pt2")
    text = _demo_text().replace("replicas = 5", 'replicas = 1\nweights = ["dense.pt2"]')
    (tmp_path / "spec.toml").write_text(text)
    with pytest.raises(AuditInputError) as err:
        load_spec(tmp_path / "spec.toml")
    assert any("[model].weights" in p and "torch.export.load can run code" in p
               for p in err.value.problems)


def test_loaded_variants_pair_one_file_with_each_dense_replica(tmp_path):
    for name in ("d0.pt", "d1.pt", "v0.pt"):
        torch.save(torch.nn.Linear(2, 2).state_dict(), tmp_path / name)
    _tiny_onnx(tmp_path / "v1.onnx")
    load = '\n[[variants]]\nname = "theirs"\nmethod = "load"\nfiles = {files}\n'
    good = (_demo_text().replace("replicas = 5", 'replicas = 2\nweights = ["d0.pt", "d1.pt"]')
            + load.format(files='["v0.pt", "v1.onnx"]'))
    (tmp_path / "good.toml").write_text(good)
    spec = load_spec(tmp_path / "good.toml")
    assert spec.variants[-1].config.files == (str(tmp_path / "v0.pt"), str(tmp_path / "v1.onnx"))
    (tmp_path / "short.toml").write_text(good.replace('["v0.pt", "v1.onnx"]', '["v0.pt"]'))
    with pytest.raises(AuditInputError, match=r"#6\.files: got 1 file\(s\); expected one per "
                                              r"dense replica \(2\)"):
        load_spec(tmp_path / "short.toml")
    (tmp_path / "trained.toml").write_text(_demo_text() + load.format(files='["v0.pt"]'))
    with pytest.raises(AuditInputError, match=r"#6\.method: 'load' pairs each file with a "
                                              r"dense replica given as a file"):
        load_spec(tmp_path / "trained.toml")


def test_analysis_slices_section_builds_the_slice_settings_and_the_plan_prints_it():
    from compaudit.analysis.slice_audit import SliceSettings
    from compaudit.pipeline.plan import describe_plan

    tiny = (Path(__file__).parent / "pipeline" / "tiny_spec.toml").read_text()
    assert "\n[analysis" not in tiny
    text = tiny + "[analysis.slices]\nenabled = true\nn_slices = 5\ndiscovery_fraction = 0.4\n"
    spec = parse_spec(text, source="s.toml")
    assert spec.analysis.slices.enabled and spec.analysis.slices.n_slices == 5
    assert spec.analysis.slices.discovery_fraction == 0.4
    assert spec.analysis.slices.pca_dims == SliceSettings().pca_dims
    assert not parse_spec(tiny).analysis.slices.enabled  # off unless a spec turns it on
    plan = describe_plan(spec, Path("run"))
    assert "slices: 5 per variant from the dense replicas' penultimate features" in plan
    assert "-> variants -> embed -> analyze ->" in plan
    bad = tiny + "[analysis.slices]\nn_slices = 0\ndiscovery_fraction = 1.0\nsize = 3\n"
    with pytest.raises(AuditInputError) as err:
        parse_spec(bad, source="s.toml")
    assert err.value.problems == [
        "s.toml: [analysis.slices].n_slices: got 0; expected an integer >= 1",
        "s.toml: [analysis.slices].discovery_fraction: got 1.0; expected a number in (0, 1)",
        "s.toml: [analysis.slices].size: unknown key; valid keys: enabled, n_slices, "
        "pca_dims, error_weight, discovery_fraction, typical"]
