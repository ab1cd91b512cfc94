"""LGM's asymmetric multi-view UNet, plain PyTorch, parameter names as in the released weights.

Input [B * V, 9, H, W] (per view: normalised RGB + Plücker map), output [B * V, 14, h, w] with
h = w = ``LGMOptions.splat_size``. ResNet blocks (GroupNorm, SiLU, skip scale sqrt(0.5)) and
self-attention that is joint over all V views of a sample (tokens of every view attend to each
other), which is what makes the reconstruction multi-view consistent.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.reconstructor.options import SKIP_SCALE, LGMOptions


class MultiViewAttention(nn.Module):
    """GroupNorm -> joint self-attention over the tokens of all views -> residual, scaled."""

    def __init__(self, dim: int, heads: int, groups: int, num_views: int) -> None:
        super().__init__()
        self.num_views = num_views
        self.heads = heads
        self.norm = nn.GroupNorm(groups, dim, eps=1e-5)
        self.attn = nn.Module()
        self.attn.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.attn.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        views_batch, channels, height, width = x.shape
        batch = views_batch // self.num_views
        tokens = self.norm(x).reshape(batch, self.num_views, channels, height * width)
        tokens = tokens.permute(0, 1, 3, 2).reshape(batch, -1, channels)  # [B, V*H*W, C]
        q, k, v = self.attn.qkv(tokens).reshape(batch, -1, 3, self.heads, channels // self.heads).permute(2, 0, 3, 1, 4)
        attended = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, -1, channels)
        attended = self.attn.proj(attended)
        attended = attended.reshape(batch, self.num_views, height * width, channels).permute(0, 1, 3, 2)
        return (attended.reshape(views_batch, channels, height, width) + x) * SKIP_SCALE


class ResnetBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, groups: int) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels, eps=1e-5)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, out_channels, eps=1e-5)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.shortcut = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.conv1(F.silu(self.norm1(x)))
        hidden = self.conv2(F.silu(self.norm2(hidden)))
        return (hidden + self.shortcut(x)) * SKIP_SCALE


def _attention_or_none(use: bool, dim: int, options: LGMOptions) -> nn.Module | None:
    return MultiViewAttention(dim, options.attention_heads, options.norm_groups, options.num_input_views) if use else None


class DownBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, attention: bool, downsample: bool, options: LGMOptions):
        super().__init__()
        self.nets = nn.ModuleList(
            ResnetBlock(in_channels if i == 0 else out_channels, out_channels, options.norm_groups)
            for i in range(options.layers_per_block)
        )
        self.attns = nn.ModuleList(_attention_or_none(attention, out_channels, options)
                                   for _ in range(options.layers_per_block))
        self.downsample = nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1) if downsample else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        skips = []
        for net, attn in zip(self.nets, self.attns):
            x = net(x)
            if attn is not None:
                x = attn(x)
            skips.append(x)
        if self.downsample is not None:
            x = self.downsample(x)
            skips.append(x)
        return x, skips


class MidBlock(nn.Module):
    def __init__(self, channels: int, attention: bool, options: LGMOptions) -> None:
        super().__init__()
        self.nets = nn.ModuleList(ResnetBlock(channels, channels, options.norm_groups) for _ in range(2))
        self.attns = nn.ModuleList([_attention_or_none(attention, channels, options)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.nets[0](x)
        if self.attns[0] is not None:
            x = self.attns[0](x)
        return self.nets[1](x)


class UpBlock(nn.Module):
    def __init__(self, in_channels: int, skip_channels: int, out_channels: int, attention: bool, upsample: bool,
                 options: LGMOptions) -> None:
        super().__init__()
        layers = options.layers_per_block + 1
        self.nets = nn.ModuleList(
            ResnetBlock((in_channels if i == 0 else out_channels) + (skip_channels if i == layers - 1 else out_channels),
                        out_channels, options.norm_groups)
            for i in range(layers)
        )
        self.attns = nn.ModuleList(_attention_or_none(attention, out_channels, options) for _ in range(layers))
        self.upsample = nn.Conv2d(out_channels, out_channels, 3, padding=1) if upsample else None

    def forward(self, x: torch.Tensor, skips: list[torch.Tensor]) -> torch.Tensor:
        for net, attn in zip(self.nets, self.attns):
            x = net(torch.cat([x, skips.pop()], dim=1))
            if attn is not None:
                x = attn(x)
        if self.upsample is not None:
            x = self.upsample(F.interpolate(x, scale_factor=2.0, mode="nearest"))
        return x


class AsymmetricUNet(nn.Module):
    def __init__(self, options: LGMOptions, in_channels: int = 9, out_channels: int = 14) -> None:
        super().__init__()
        down, up = options.down_channels, options.up_channels
        self.conv_in = nn.Conv2d(in_channels, down[0], 3, padding=1)
        self.down_blocks = nn.ModuleList(
            DownBlock(down[max(i - 1, 0)], down[i], options.down_attention[i], i != len(down) - 1, options)
            for i in range(len(down))
        )
        self.mid_block = MidBlock(down[-1], options.mid_attention, options)
        self.up_blocks = nn.ModuleList(
            UpBlock(up[max(i - 1, 0)], down[max(-2 - i, -len(down))], up[i], options.up_attention[i],
                    i != len(up) - 1, options)
            for i in range(len(up))
        )
        self.norm_out = nn.GroupNorm(options.norm_groups, up[-1], eps=1e-5)
        self.conv_out = nn.Conv2d(up[-1], out_channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        skips = [x]
        for block in self.down_blocks:
            x, block_skips = block(x)
            skips.extend(block_skips)
        x = self.mid_block(x)
        for block in self.up_blocks:
            count = len(block.nets)
            block_skips, skips = skips[-count:], skips[:-count]
            x = block(x, list(block_skips))
        return self.conv_out(F.silu(self.norm_out(x)))
