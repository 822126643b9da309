"""Network dissection: throughput and peak memory against the in-memory approach (CPU).

The peer is what NetDissect-Lite does and what a user would otherwise write: keep every
activation of the dissected layers in memory, take ``numpy.quantile`` per unit, then
upsample, threshold and count intersections and unions concept by concept with NumPy.
compaudit streams twice instead (an exact top-m threshold pass, then per-batch
accumulation), so its memory stays flat as the dataset grows.

For each dataset size and model (``small_cnn``, all four blocks, 120 units; ``resnet18``
small-input stem, ``layer3``, 256 units) both run in fresh processes on the same
synthetic faces. Printed: wall time, units x images per second (both passes), peak RSS
(``ru_maxrss``) minus the RSS before the call, and whether both found the same
thresholds, IoUs and interpretable units.

Run: ``python benchmarks/bench_dissection.py [--sizes 1000 4000] [--size 32]``
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile

_CHILD = r"""
import json, resource, sys, time
import numpy as np, torch, torch.nn.functional as F
from compaudit.dissection import DissectionConfig, SyntheticFaceConcepts, dissect
from compaudit.models.architectures import build_model

root, arch, layer, q, out = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), sys.argv[5]
torch.manual_seed(0)
torch.set_num_threads(2)
model = build_model(arch, num_classes=2, small_input=True).eval()
ds = SyntheticFaceConcepts(root, split="all")
rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10


def naive():
    # Pass 1: every activation in memory, numpy.quantile per unit.
    module = dict(model.named_modules())[layer]
    acts = []
    handle = module.register_forward_hook(lambda m, i, o: acts.append(o.detach().clone()))
    with torch.no_grad():
        for start in range(0, len(ds), 128):
            model(torch.stack([ds.image(i) for i in range(start, min(start + 128, len(ds)))]))
    handle.remove()
    a = torch.cat(acts).numpy()
    k = a.shape[1]
    t = np.quantile(a.transpose(1, 0, 2, 3).reshape(k, -1), 1 - q, axis=1)
    # Pass 2: upsample, threshold and count per concept.
    n_c = len(ds.concepts)
    inter = np.zeros((k, n_c)); union = np.zeros((k, n_c))
    for i in range(len(ds)):
        labels = ds[i][1].numpy()
        up = F.interpolate(torch.from_numpy(a[i:i + 1]), size=labels.shape[-2:],
                           mode="bilinear", align_corners=False)[0].numpy()
        active = up > t[:, None, None]
        for c in range(n_c):
            mask = (labels == c).any(axis=0)
            inter[:, c] += (active & mask).sum(axis=(1, 2))
            union[:, c] += (active | mask).sum(axis=(1, 2))
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    return t, iou


before = rss()
t0 = time.perf_counter()
if sys.argv[6] == "compaudit":
    res = dissect(model, ds, config=DissectionConfig(layers=(layer,), quantile=q, batch_size=128))
    thresholds, iou = res.units["threshold"].to_numpy(), res.iou[layer]
else:
    thresholds, iou = naive()
wall = time.perf_counter() - t0
np.savez(out, thresholds=thresholds, iou=iou)
print(json.dumps({"wall": wall, "units": len(thresholds), "images": len(ds),
                  "peak_mib": rss() - before}))
"""

CASES = (("small_cnn", ("features.2", "features.5", "features.8", "features.11")),
         ("resnet18", ("layer3",)))


def _run(root: str, arch: str, layer: str, q: float, tool: str, out: str) -> dict:
    done = subprocess.run([sys.executable, "-c", _CHILD, root, arch, layer, str(q), out, tool],
                          check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 4000],
                        help="synthetic faces per run")
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--quantile", type=float, default=0.005)
    args = parser.parse_args()
    import numpy as np

    from compaudit.data.synthetic import generate_synthetic_faces

    print(f"{'arch':10s} {'layer':12s} {'images':>6s} {'tool':10s} {'wall s':>7s} "
          f"{'units*img/s':>12s} {'peak MiB':>9s}  same result")
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.sizes:
            root = generate_synthetic_faces(f"{tmp}/faces-{n}", n=n, image_size=args.size,
                                            seed=0)
            for arch, layers in CASES:
                for layer in layers:
                    runs, arrays = {}, {}
                    for tool in ("compaudit", "in-memory"):
                        out = f"{tmp}/{arch}-{layer}-{n}-{tool}.npz"
                        runs[tool] = _run(str(root), arch, layer, args.quantile, tool, out)
                        arrays[tool] = np.load(out)
                    a, b = arrays["compaudit"], arrays["in-memory"]
                    same = (np.allclose(a["thresholds"], b["thresholds"], rtol=1e-6)
                            and np.allclose(a["iou"], b["iou"], atol=1e-9))
                    for tool, r in runs.items():
                        print(f"{arch:10s} {layer:12s} {n:6d} {tool:10s} {r['wall']:7.2f} "
                              f"{r['units'] * r['images'] / r['wall']:12.0f} "
                              f"{r['peak_mib']:9.0f}  {same}")
                    print(f"{'':10s} {'':12s} {'':6s} ratio      "
                          f"{runs['in-memory']['wall'] / runs['compaudit']['wall']:7.2f}x faster, "
                          f"memory {runs['in-memory']['peak_mib'] / max(runs['compaudit']['peak_mib'], 1):.1f}x less")


if __name__ == "__main__":
    main()
