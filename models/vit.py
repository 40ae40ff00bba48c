"""A small vision transformer whose depth, width, heads and patch size are config values.

    image -> patches (a patch_size-strided conv = one linear map per patch) -> + position embedding
    [-> prepend a class token] -> `depth` pre-norm transformer blocks (multi-head self-attention
    + MLP, each with a residual) -> LayerNorm -> class token or mean of the tokens -> linear head

The blocks are PyTorch's own `nn.TransformerEncoderLayer` (pre-norm, GELU), which uses the
fused scaled-dot-product attention kernels.
"""

from __future__ import annotations

import torch
from torch import nn

from common.errors import ConfigError
from models.layers import check_conv_impl, conv2d


class SimpleViT(nn.Module):
    """ViT for `image_size` inputs cut into (image_size / patch_size)^2 tokens of width `dim`.

    Args:
        pool: 'cls' classifies from a learned class token, 'mean' from the mean of the patch tokens.
        mlp_dim: hidden width of each block's MLP (ViT uses 4 x dim).
        conv_impl: 'torch' or 'custom' for the patch-embedding convolution.
    """

    def __init__(self, in_channels: int = 3, image_size: int = 32, num_classes: int = 10, patch_size: int = 4,
                 dim: int = 64, depth: int = 4, heads: int = 4, mlp_dim: int = 128, dropout: float = 0.0,
                 pool: str = "cls", conv_impl: str = "torch") -> None:
        super().__init__()
        if image_size % patch_size:
            raise ConfigError(f"model.patch_size={patch_size} does not divide dataset.image_size={image_size}; "
                              f"pick a patch size that divides it")
        if dim % heads:
            raise ConfigError(f"model.dim={dim} is not a multiple of model.heads={heads}; each head gets dim/heads")
        if pool not in ("cls", "mean"):
            raise ConfigError(f"model.pool={pool} is not known; use cls or mean")
        check_conv_impl(conv_impl)
        self.pool = pool
        tokens = (image_size // patch_size) ** 2 + (pool == "cls")
        self.patch_embed = conv2d(conv_impl, in_channels, dim, patch_size, stride=patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim)) if pool == "cls" else None
        self.pos_embed = nn.Parameter(torch.empty(1, tokens, dim))
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.dropout = nn.Dropout(dropout)
        block = nn.TransformerEncoderLayer(dim, heads, mlp_dim, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        # enable_nested_tensor only pays off for padded sequences, and ViT tokens never are.
        self.blocks = nn.TransformerEncoder(block, depth, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2)  # (N, patches, dim)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        x = self.norm(self.blocks(self.dropout(x + self.pos_embed)))
        x = x[:, 0] if self.pool == "cls" else x.mean(dim=1)
        return self.head(x)
