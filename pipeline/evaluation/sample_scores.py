"""The paper's evaluation protocol for one sample (section 4).

Text-to-multi-view (no ground truth): fit Gaussians to the 12 even views, render the 12 odd
cameras and score them against the generated odd views (PSNR / SSIM / LPIPS); CLIP score of the
prompt against all 24 views; flow-warping RMSE between frames 1 and 6 apart.
Image-to-multi-view: the generated views against the ground-truth renders at the same cameras
(PSNR / SSIM / LPIPS), leaving out view 0, the condition.

Metric networks are optional: a score whose network was not given is left out of the result.
"""

from __future__ import annotations

import torch

from models.gaussians.fit import FitConfig, fit_gaussians
from models.gaussians.rendering import render_batch
from models.metrics.scores import MetricNetworks, consistency_scores, image_scores


def score_text_to_multiview(prompt: str, views: torch.Tensor, c2w: torch.Tensor, fov: float,
                            background: tuple[float, float, float], networks: MetricNetworks,
                            fit: FitConfig | None = None) -> dict[str, float]:
    """One generated sample: views [F, 3, H, W] in [0, 1] at cameras c2w [F, 4, 4] (OpenGL, world).

    The fit starts from the same random Gaussians for every sample and setting, so 3D-aware and
    plain sampling are scored alike.
    """
    even, odd = list(range(0, len(views), 2)), list(range(1, len(views), 2))
    fitted = fit_gaussians(views[even], c2w[even], fov, background, fit)
    rendered, _ = render_batch(fitted.as_batch(), c2w[odd][None], fov, views.shape[-1], background)
    scores = image_scores(rendered[0].clamp(0, 1), views[odd], networks.lpips)
    if networks.clip is not None:
        scores["clip_score"] = networks.clip.score(prompt, views)
    scores.update(consistency_scores(views, networks))
    return scores


def score_image_to_multiview(views: torch.Tensor, ground_truth: torch.Tensor, networks: MetricNetworks
                             ) -> dict[str, float]:
    """Generated views [F, 3, H, W] against ground-truth renders at the same cameras, view 0 (the
    condition) left out; plus flow-warping RMSE of the generated views when RAFT is given."""
    scores = image_scores(views[1:], ground_truth[1:], networks.lpips)
    scores.update(consistency_scores(views, networks))
    return scores
