"""The weights' moving average (models.generator.ema) and the objective's recipe options (issue 27, item 5)."""

from __future__ import annotations

import pytest
import torch

from models.generator.ema import ShardedEMA, swapped_in


def test_the_average_follows_the_authors_update_and_shards_the_weights():
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    module[1].bias.requires_grad_(False)  # frozen weights are not averaged
    start = {name: p.detach().clone() for name, p in module.named_parameters()}
    ema = ShardedEMA(module, decay=0.9)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(1.0)
    ema.update()
    for name in ("0.weight", "0.bias", "1.weight"):  # the authors' v = p.lerp(v, decay) = 0.9 v + 0.1 p
        torch.testing.assert_close(ema.shadow[name], 0.9 * start[name] + 0.1 * (start[name] + 1))
    assert "1.bias" not in ema.shadow

    ranks = [ShardedEMA(module, 0.9, rank, 2) for rank in (0, 1)]
    assert ranks[0].owned() == ["0.weight", "1.weight"] and ranks[1].owned() == ["0.bias"]
    with pytest.raises(ValueError, match="rank 1 of 2 does not match rank 0 of 2"):
        ranks[0].load_state_dict(ranks[1].state_dict())
    restored = ShardedEMA(module, 0.9)
    restored.load_state_dict(ema.state_dict())
    torch.testing.assert_close(restored.shadow, ema.shadow)

    before = {name: p.detach().clone() for name, p in module.named_parameters()}
    with swapped_in(module, ema.gathered()):
        torch.testing.assert_close(module[0].weight.detach(), ema.shadow["0.weight"])
    for name, p in module.named_parameters():
        assert torch.equal(p, before[name]), "the trained weights are back after saving the average"
    with pytest.raises(ValueError, match="decay"):
        ShardedEMA(module, 1.0)


def test_offset_noise_adds_a_constant_per_frame_and_channel():
    from models.generator.objective import MultiViewBatch, diffusion_loss
    from models.variants import VARIANTS as RECIPES
    from models.toy.tiny import build_tiny

    assert (RECIPES["i2v"].offset_noise, RECIPES["i2v"].ema_decay, RECIPES["i2v"].condition_dropout) == (0.1, 0.9999, 0.0)
    assert (RECIPES["t2v"].offset_noise, RECIPES["t2v"].ema_decay, RECIPES["t2v"].condition_dropout) == (0.0, None, 0.1)
    model = build_tiny("t2v", num_frames=4)
    noises = []
    add_noise = model.scheduler.add_noise
    model.scheduler.add_noise = lambda latents, noise, t: noises.append(noise) or add_noise(latents, noise, t)
    batch = MultiViewBatch(views=torch.zeros(2, 4, 3, 32, 32), cameras=torch.eye(4).expand(2, 4, 4, 4),
                           prompts=["a", "b"])
    with torch.no_grad():
        plain = diffusion_loss(model, batch, torch.Generator().manual_seed(0), condition_dropout=0.0)
        offset = diffusion_loss(model, batch, torch.Generator().manual_seed(0), condition_dropout=0.0,
                                offset_noise=0.1)
    difference = noises[1] - noises[0]  # [B, C, F, h, w]: the same Gaussian noise, plus the offset
    assert difference.std(dim=(-2, -1)).max() < 1e-6
    assert 0.02 < difference[..., 0, 0].std() < 0.3
    assert plain.item() != offset.item()


def test_an_average_that_is_still_mostly_its_start_is_said_when_saved_and_when_served(tmp_path, caplog):
    """0.9999 over 2,000 steps keeps 82 % of the starting weights: --use-ema would serve the base model."""
    from models.generator.ema import EMA_RECORD, start_share, warn_if_stale, write_record

    assert round(start_share(0.9999, 2000), 2) == 0.82
    with caplog.at_level("WARNING", logger="models.generator.ema"):
        write_record(str(tmp_path), 0.9999, 2000)
        warn_if_stale(str(tmp_path))
    assert len(caplog.records) == 2 and "still holds 82% of the weights fine-tuning started from" in caplog.text
    assert (tmp_path / EMA_RECORD).is_file()
    caplog.clear()
    with caplog.at_level("WARNING", logger="models.generator.ema"):
        write_record(str(tmp_path), 0.999, 20000)  # 2e-9 of the start left: a real average
        warn_if_stale(str(tmp_path))
    assert not caplog.records
