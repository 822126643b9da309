"""Training loop: updates against hand-derived formulas, determinism, resume after SIGKILL."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from compaudit.errors import AuditInputError
from compaudit.models.architectures import build_model
from compaudit.models.training import FineTuner, TrainConfig, train


class ToyImages(Dataset):
    """Random images whose label is the sign of the red channel's mean (learnable)."""

    num_classes = 2

    def __init__(self, n: int = 256, size: int = 16, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, 3, size, size, generator=g)
        self.y = (self.x[:, 0].mean((1, 2)) > 0).long()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int):
        return self.x[i], int(self.y[i]), f"toy/{i}"


def _linear_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 2 * 2, 3))


def _full_batch_grad(model: nn.Module, ds: ToyImages, smoothing: float = 0.0) -> list[torch.Tensor]:
    model.zero_grad()
    F.cross_entropy(model(ds.x), ds.y, label_smoothing=smoothing).backward()
    return [p.grad.clone() for p in model.parameters()]


def _cfg(**kw) -> TrainConfig:
    base = dict(epochs=1, batch_size=32, lr=0.05, momentum=0.9, weight_decay=0.0,
                schedule="constant", seed=0, num_threads=1)
    base.update(kw)
    return TrainConfig(**base)


def _small_cnn_run(seed: int, progress: bool = False, **kw):
    torch.manual_seed(seed)
    model = build_model("small_cnn", num_classes=2)
    result = train(model, ToyImages(256), _cfg(epochs=2, seed=seed, **kw), progress=progress)
    return model, result


# --- input checks ----------------------------------------------------------------------


def test_an_unavailable_cuda_device_is_a_clear_error():
    # No CUDA here: "not available"; on a GPU machine device 99 does not exist.
    with pytest.raises(AuditInputError, match="CUDA is not available|index 99 does not exist"):
        train(_linear_model(), ToyImages(8, size=2), _cfg(device="cuda:99"), progress=False)


def test_empty_dataset_is_refused():
    with pytest.raises(AuditInputError, match="empty"):
        train(_linear_model(), ToyImages(0, size=2), _cfg(), progress=False)


# --- the updates, against hand-derived formulas ---------------------------------------


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_one_sgd_step_matches_w_minus_lr_grad(smoothing):
    ds = ToyImages(16, size=2)
    model, ref = _linear_model(), _linear_model()
    grads = _full_batch_grad(ref, ds, smoothing)
    lr = 0.3
    train(model, ds, _cfg(batch_size=16, lr=lr, momentum=0.0, label_smoothing=smoothing),
          progress=False)
    for p, p0, g in zip(model.parameters(), ref.parameters(), grads, strict=True):
        torch.testing.assert_close(p, p0.detach() - lr * g, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("schedule, factor", [("constant", 1.0), ("cosine", 0.5), ("step", 0.1)])
def test_second_step_uses_the_scheduled_learning_rate(schedule, factor):
    # Two full-batch steps (2 epochs x 1 step): T = 2. cosine: 0.5 * (1 + cos(pi / 2)) = 0.5
    # at step 1; step schedule with milestone 0.5 * T = 1 and gamma 0.1: 0.1.
    ds = ToyImages(16, size=2)
    model, ref = _linear_model(), _linear_model()
    lr = 0.3
    train(model, ds, _cfg(epochs=2, batch_size=16, lr=lr, momentum=0.0, schedule=schedule,
                          step_milestones=(0.5,), step_gamma=0.1), progress=False)
    for scale in (1.0, factor):
        grads = _full_batch_grad(ref, ds)
        with torch.no_grad():
            for p, g in zip(ref.parameters(), grads, strict=True):
                p -= lr * scale * g
    for p, q in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_sgd_momentum_and_weight_decay_follow_the_torch_sgd_formula():
    # v1 = g0 + wd w0; w1 = w0 - lr v1; v2 = mu v1 + g1 + wd w1; w2 = w1 - lr v2.
    ds = ToyImages(16, size=2)
    model, ref = _linear_model(), _linear_model()
    lr, mu, wd = 0.2, 0.9, 0.01
    train(model, ds, _cfg(epochs=2, batch_size=16, lr=lr, momentum=mu, weight_decay=wd),
          progress=False)
    params = list(ref.parameters())
    v = [torch.zeros_like(p) for p in params]
    for _ in range(2):  # the first step's buffer is g (torch SGD), i.e. mu * 0 + g
        grads = _full_batch_grad(ref, ds)
        with torch.no_grad():
            v = [mu * vi + g + wd * p for p, vi, g in zip(params, v, grads, strict=True)]
            for p, vi in zip(params, v, strict=True):
                p -= lr * vi
    for p, q in zip(model.parameters(), params, strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


def test_first_adamw_step_is_decay_then_lr_times_normalised_gradient():
    # Step 1 of AdamW: m_hat = g, v_hat = g^2, so w1 = w0 (1 - lr wd) - lr g / (|g| + eps).
    ds = ToyImages(16, size=2)
    model, ref = _linear_model(), _linear_model()
    lr, wd = 0.01, 0.1
    train(model, ds, _cfg(batch_size=16, lr=lr, optimizer="adamw", weight_decay=wd),
          progress=False)
    grads = _full_batch_grad(ref, ds)
    for p, p0, g in zip(model.parameters(), ref.parameters(), grads, strict=True):
        expected = p0.detach() * (1 - lr * wd) - lr * g / (g.abs() + 1e-8)
        torch.testing.assert_close(p, expected, rtol=1e-5, atol=1e-6)


def test_callbacks_see_every_step_and_epoch_and_the_model_learns():
    steps, epochs = [], []
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=2)
    result = train(model, ToyImages(256), _cfg(epochs=3, lr=0.05),
                   step_callbacks=[lambda s, m: steps.append(s)],
                   epoch_callbacks=[lambda e, m: epochs.append(e)], progress=False)
    assert steps == list(range(1, 3 * math.ceil(256 / 32) + 1))
    assert epochs == [1, 2, 3]
    assert result.global_step == steps[-1] and result.epochs == 3
    assert len(result.losses) == len(result.accuracies) == 3
    assert result.losses[-1] < result.losses[0]
    assert result.accuracies[-1] > 0.8  # the toy label is a simple function of the image


def test_amp_and_channels_last_are_ignored_on_cpu_with_a_warning():
    with pytest.warns(UserWarning, match="CUDA only"):
        train(_linear_model(), ToyImages(8, size=2), _cfg(amp=True), progress=False)


# --- determinism and resume ------------------------------------------------------------


def test_same_seed_gives_identical_weights_and_another_seed_does_not():
    a, ra = _small_cnn_run(3)
    b, rb = _small_cnn_run(3)
    c, _ = _small_cnn_run(4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert ra.losses == rb.losses
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_loader_workers_and_progress_bars_change_speed_not_numbers():
    a, _ = _small_cnn_run(3)
    b, _ = _small_cnn_run(3, progress=True, num_workers=2)
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))


def test_fine_tuner_trains_like_train_and_passes_step_callbacks():
    steps = []
    tuned, plain = _linear_model(), _linear_model()
    ds = ToyImages(16, size=2)
    result = FineTuner(ds, _cfg(epochs=2, batch_size=8))(tuned, [lambda s, m: steps.append(s)])
    train(plain, ds, _cfg(epochs=2, batch_size=8), progress=False)
    assert steps == [1, 2, 3, 4] and result.global_step == 4
    pairs = zip(tuned.parameters(), plain.parameters(), strict=True)
    assert all(torch.equal(p, q) for p, q in pairs)


def test_resume_refuses_a_different_config(tmp_path):
    train(_linear_model(), ToyImages(16, size=2), _cfg(), checkpoint_dir=tmp_path,
          progress=False)
    with pytest.raises(AuditInputError, match=r"lr: 0\.05 -> 0\.1"):
        train(_linear_model(), ToyImages(16, size=2), _cfg(lr=0.1), checkpoint_dir=tmp_path,
              progress=False)


def test_a_finished_run_resumes_to_its_final_weights_without_training(tmp_path):
    model = _linear_model()
    first = train(model, ToyImages(16, size=2), _cfg(epochs=2), checkpoint_dir=tmp_path,
                  progress=False)
    steps = []
    again = _linear_model(seed=1)
    second = train(again, ToyImages(16, size=2), _cfg(epochs=2), checkpoint_dir=tmp_path,
                   step_callbacks=[lambda s, m: steps.append(s)], progress=False)
    assert steps == [] and second.resumed_from_epoch == 2
    assert second.losses == first.losses and second.checkpoint_path == tmp_path / "checkpoint.pt"
    pairs = zip(model.parameters(), again.parameters(), strict=True)
    assert all(torch.equal(p, q) for p, q in pairs)


_SCRIPT = textwrap.dedent('''
    import json, sys, time
    import torch
    from compaudit.models.architectures import build_model
    from compaudit.models.training import FineTuner, TrainConfig, train

    ckpt_dir, out, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])

    class Data(torch.utils.data.Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.x = torch.randn(320, 3, 16, 16, generator=g)
            self.y = (self.x[:, 0].mean((1, 2)) > 0).long()
        def __len__(self):
            return 320
        def __getitem__(self, i):
            return self.x[i], int(self.y[i]), str(i)

    class MagnitudeMask:
        """Prunes half of every conv weight at step 5 and re-applies the masks after
        each step: without its state restored a resumed run would stop masking."""
        state_key = "masks"
        def __init__(self):
            self.masks = {}
        def __call__(self, step, model):
            if step == 5:
                for name, p in model.named_parameters():
                    if p.ndim == 4:
                        self.masks[name] = p.abs() > p.abs().flatten().median()
            for name, p in model.named_parameters():
                if name in self.masks:
                    p.mul_(self.masks[name])
            time.sleep(delay)  # makes the kill land inside epoch 2
        def state_dict(self):
            return {"masks": dict(self.masks)}
        def load_state_dict(self, state):
            self.masks = dict(state["masks"])

    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=2)
    config = TrainConfig(epochs=3, batch_size=32, lr=0.05, seed=0, num_threads=1)
    result = train(model, Data(), config, checkpoint_dir=ckpt_dir,
                   step_callbacks=[MagnitudeMask()], progress=False)
    torch.save(model.state_dict(), out)
    print(json.dumps({"resumed_from_epoch": result.resumed_from_epoch,
                      "losses": result.losses}))
''')


def _run_script(script: Path, ckpt: Path, out: Path, delay: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(script), str(ckpt), str(out), str(delay)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_resume_after_sigkill_ends_with_identical_weights(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT)
    # The uninterrupted reference runs beside the victim (2 cores, 1 thread each).
    reference = _run_script(script, tmp_path / "ref_ckpt", tmp_path / "ref.pt", 0.0)
    victim_ckpt = tmp_path / "ckpt"
    victim = _run_script(script, victim_ckpt, tmp_path / "never.pt", 0.2)
    deadline = time.monotonic() + 120
    while not (victim_ckpt / "checkpoint.pt").exists():
        assert victim.poll() is None, victim.communicate()[1]
        assert time.monotonic() < deadline, "no checkpoint after 120 s"
        time.sleep(0.01)
    victim.kill()  # SIGKILL: no cleanup, no final save
    victim.wait()
    assert victim.returncode == -9 and not (tmp_path / "never.pt").exists()
    saved = torch.load(victim_ckpt / "checkpoint.pt", weights_only=True)
    killed_at = saved["epoch"]
    assert 1 <= killed_at < 3
    pruned = saved["extra_state"]["masks"]["masks"]  # the callback's state is in the checkpoint
    assert len(pruned) == 4

    resumed = _run_script(script, victim_ckpt, tmp_path / "resumed.pt", 0.0)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err
    assert json.loads(out.splitlines()[-1])["resumed_from_epoch"] == killed_at
    ref_out, ref_err = reference.communicate(timeout=300)
    assert reference.returncode == 0, ref_err
    ref_losses = json.loads(ref_out.splitlines()[-1])["losses"]
    assert ref_losses == json.loads(out.splitlines()[-1])["losses"]

    a = torch.load(tmp_path / "ref.pt", weights_only=True)
    b = torch.load(tmp_path / "resumed.pt", weights_only=True)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # The masks survived the resume: half of every pruned conv weight is still zero.
    for name in pruned:
        assert (b[name] == 0).float().mean() >= 0.5


def test_models_with_auxiliary_heads_train_their_main_head():
    """GoogLeNet returns (logits, aux2, aux1) in training mode; the main head is trained
    and its step equals one taken by hand on ``outputs.logits``."""
    import torchvision

    torch.manual_seed(0)
    build = dict(num_classes=2, aux_logits=True, init_weights=False, dropout=0.0,
                 dropout_aux=0.0)  # no dropout: both steps see the same network
    model = torchvision.models.googlenet(**build)
    reference = torchvision.models.googlenet(**build)
    reference.load_state_dict(model.state_dict())
    data = ToyImages(8, size=32)
    train(model, data, _cfg(batch_size=8, momentum=0.0, lr=0.1), progress=False)
    reference.train()
    F.cross_entropy(reference(data.x).logits, data.y).backward()
    with torch.no_grad():
        expected = reference.fc.weight - 0.1 * reference.fc.weight.grad
    torch.testing.assert_close(model.fc.weight, expected)


@pytest.mark.parametrize("outputs, output, smoothing", [(1, 0, 0.0), (3, 2, 0.0), (3, 1, 0.2)])
def test_a_sigmoid_head_steps_on_bce_with_logits_of_its_logit(outputs, output, smoothing):
    """One full-batch SGD step with a sigmoid head is w - lr * grad of torch's own
    BCEWithLogitsLoss on the chosen logit (smoothed targets y (1 - e) + e / 2)."""
    from compaudit.configs.head import Head

    ds = ToyImages(16, size=2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, outputs))
    ref = nn.Sequential(nn.Flatten(), nn.Linear(12, outputs))
    ref.load_state_dict(model.state_dict())
    target = ds.y.float() * (1 - smoothing) + smoothing / 2
    nn.BCEWithLogitsLoss()(ref(ds.x)[:, output], target).backward()
    lr = 0.3
    result = train(model, ds, _cfg(batch_size=16, lr=lr, momentum=0.0,
                                   label_smoothing=smoothing),
                   head=Head(kind="sigmoid", outputs=outputs, output=output), progress=False)
    for p, p0 in zip(model.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(p, p0.detach() - lr * p0.grad, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        before = ref(ds.x)[:, output]
    # The recorded accuracy is the sigmoid head's: sigmoid(z) >= 0.5 against the label.
    assert result.accuracies == [float(((torch.sigmoid(before) >= 0.5).long() == ds.y)
                                       .float().mean())]
