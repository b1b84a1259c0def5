"""memcurv's reference protocol against an implementation written here, from the protocol's description alone.

The description (method brief §5, issue 12): maps are channel-summed and ReLU'd at latent resolution, resized to 256×256 with
PIL's bilinear filter, masks with PIL's nearest filter then `> 0.5`; a map holding NaN or Inf is skipped; log1p, then min-max over
each evaluated subset, `(m - min) / (max - min + 1e-8)` clipped to [0, 1]; thresholds `linspace(-1e-6, 1 + 1e-6, 101)` with the
prediction `m > th`; per-image IoU is 1 when the union is empty; global IoU, mean IoU and pixel accuracy each maximised over the
thresholds on its own. Nothing below calls memcurv except `evaluate_dataset`, whose numbers are checked.
"""
import numpy as np
import pytest
import xarray as xr
from PIL import Image

from memcurv.evaluate.table import evaluate_dataset

SIZE = 256


def independent_reference(maps, masks):
    "Best global IoU, mean IoU, accuracy over the reference's thresholds, and how many maps were skipped, scanning as the protocol says."
    kept_maps, kept_masks, skipped = [], [], 0
    for m, g in zip(maps, masks):
        if not np.isfinite(m).all():
            skipped += 1
            continue
        m = m.astype(np.float32)
        if m.shape != (SIZE, SIZE): m = np.array(Image.fromarray(m).resize((SIZE, SIZE), Image.Resampling.BILINEAR))
        img = Image.fromarray(g.astype(np.uint8) * 255)
        if img.size != (SIZE, SIZE): img = img.resize((SIZE, SIZE), Image.Resampling.NEAREST)
        kept_maps.append(m)
        kept_masks.append(np.array(img).astype(np.float32) / 255.0 > 0.5)
    logs = np.log1p(np.array(kept_maps))
    norm = np.clip((logs - logs.min()) / (logs.max() - logs.min() + 1e-8), 0, 1)
    gt = np.array(kept_masks)
    best = dict(iou=0.0, miou=0.0, accuracy=0.0)
    for th in np.linspace(0.0 - 1e-6, 1.0 + 1e-6, 101):
        pred = norm > th
        inter = (pred & gt).sum(axis=(1, 2))
        union = (pred | gt).sum(axis=(1, 2))
        per_image = np.ones(len(pred))
        per_image[union > 0] = inter[union > 0] / union[union > 0]
        values = dict(iou=inter.sum() / union.sum() if union.sum() > 0 else 1.0, miou=per_image.mean(),
                      accuracy=(pred == gt).mean())
        for k, v in values.items():
            if v > best[k]: best[k] = v
    return best, len(kept_maps), skipped


@pytest.fixture(scope="module")
def fixed():
    "A maps Dataset (latents 16×16, images 64×64) with TV, MV and N samples, a NaN map, and one generation matching two templates."
    rng = np.random.default_rng(12)
    labels = np.array(["TV"] * 5 + ["MV"] * 2 + ["N"] * 4)
    prompts = ["tv a"] * 3 + ["tv b"] * 2 + ["mv"] * 2 + [f"plain {i}" for i in range(4)]
    n, lat = len(labels), 16
    templates = np.zeros((3, 64, 64), bool)
    templates[0, 8:40, 4:60] = True; templates[1, 30:60, 20:50] = True; templates[2, :16] = True
    masks = np.stack([templates[0], templates[0], templates[1], templates[1], templates[2], np.ones((64, 64), bool),
                      np.ones((64, 64), bool), *np.zeros((4, 64, 64), bool)])
    latent_masks = masks.reshape(n, lat, 4, lat, 4).mean((2, 4))             # where each map should light up

    def channel_maps(signal):
        "(sample, channel, y, x) values whose channel sum is noise plus `signal` on the memorized region."
        base = rng.normal(0, 1, (n, 4, lat, lat)) + signal * latent_masks[:, None] * rng.uniform(0.5, 1.5, (n, 1, 1, 1))
        return base * rng.uniform(0.1, 20, (n, 1, 1, 1))                        # a spread of scales, as real maps have

    curvature = channel_maps(2.0)[:, None, None]                                 # (sample, branch, timestep, channel, y, x)
    diff = np.stack([channel_maps(3.0), channel_maps(1.0)], 1)[:, :, None]       # (sample, baseline, timestep, channel, y, x)
    score = np.stack([channel_maps(4.0) ** 2, channel_maps(0.5) ** 2], 1)[:, :, None]
    diff[4, 0, 0, 1, 3, 5] = np.nan                                              # one dh_uncond map holds a NaN
    lat_dims = ("sample", "timestep", "channel", "y", "x")
    ds = xr.Dataset(dict(curvature=(("sample", "branch") + lat_dims[1:], curvature.astype(np.float32)),
                         curvature_diff=(("sample", "baseline") + lat_dims[1:], diff.astype(np.float32)),
                         score_diff_sq=(("sample", "baseline") + lat_dims[1:], score.astype(np.float32))),
                    coords=dict(sample=np.arange(n), prompt=("sample", prompts), seed=("sample", np.arange(n) % 3),
                                branch=["cond"], baseline=["uncond", "checkpoint"], timestep=[1]))
    # Sample 1's seed reproduced a second template: one more item, the same map against another mask.
    items = dict(masks=np.concatenate([masks, templates[2][None]]), labels=np.append(labels, "TV"), samples=np.append(np.arange(n), 1))
    channel_sums = {"raw curvature": curvature[:, 0, 0].sum(1), "dh_uncond": diff[:, 0, 0].sum(1), "ds_uncond": score[:, 0, 0].sum(1),
                    "dh_checkpoint": diff[:, 1, 0].sum(1), "ds_checkpoint": score[:, 1, 0].sum(1)}
    relu = {k: np.where(np.isnan(v), np.nan, np.maximum(v, 0)) for k, v in channel_sums.items()}
    return ds, items, relu


@pytest.mark.parametrize("subset,labels_in", [("TV", {"TV"}), ("all", {"TV", "MV", "RV", "N"})])
def test_reference_protocol_matches_independent_implementation(fixed, subset, labels_in):
    ds, items, relu = fixed
    table = evaluate_dataset(ds, **items, protocol="reference", n_boot=5).query("threshold_rule == 'reference'")
    keep = np.isin(items["labels"], list(labels_in))
    for method, maps in relu.items():
        expected, n_kept, n_skipped = independent_reference(maps[items["samples"][keep]], items["masks"][keep])
        row = table[(table.method == method) & (table.subset == subset)].iloc[0]
        for metric in ("iou", "miou", "accuracy"):
            assert abs(row[metric] - expected[metric]) < 1e-6, (method, subset, metric, row[metric], expected[metric])
        assert (row.n_samples, row.n_skipped) == (n_kept, n_skipped), method
    # The fixture exercises what the protocol is about: a skipped NaN map and, in "all", non-memorized images.
    dh = table[(table.method == "dh_uncond") & (table.subset == subset)].iloc[0]
    assert dh.n_skipped == 1
    if subset == "all":
        assert keep.sum() == 12 and (items["labels"][keep] == "N").sum() == 4
