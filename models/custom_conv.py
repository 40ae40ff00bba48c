"""A 2D convolution built from `unfold`/`fold` with a hand-written backward pass.

Forward, per image: unfold the input into columns, one per output position, each holding the
C*kh*kw values under the kernel there (im2col); the convolution is then one matrix product,
weight (O, C*kh*kw) @ columns (C*kh*kw, L), plus the bias.

Backward, given dL/dout reshaped to (N, O, L):
    dL/dweight = sum_n  dL/dout_n @ columns_n^T                      (O, C*kh*kw)
    dL/dbias   = dL/dout summed over images and positions              (O,)
    dL/dinput  = fold(weight^T @ dL/dout)                             fold adds each column back
                                                                       onto the pixels it came from
Checked against `torch.nn.functional.conv2d` and with `torch.autograd.gradcheck` in
tests/test_models.py. `model.conv_impl=custom` swaps `Conv2d` below into the conv models.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

from common.errors import ConfigError

Pair = tuple[int, int]


def _pair(v: int | Pair) -> Pair:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


class Conv2dFunction(torch.autograd.Function):
    """conv2d(x, weight, bias) for groups=1, zero padding, any kernel, stride, padding, dilation."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                stride: Pair, padding: Pair, dilation: Pair) -> torch.Tensor:
        n, _, h, w = x.shape
        out_channels, _, kh, kw = weight.shape
        out_h = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
        out_w = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
        if out_h < 1 or out_w < 1:
            raise ValueError(f"a {kh}x{kw} kernel does not fit a {h}x{w} input with padding {padding}")
        cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)  # (N, C*kh*kw, L)
        # reshape, not view: the weight may be channels_last after model.to(memory_format=...)
        out = weight.reshape(out_channels, -1) @ cols  # (N, O, L)
        if bias is not None:
            out = out + bias.view(1, -1, 1)
        # The columns are kh*kw times the input's size: keep the input and unfold again in backward.
        ctx.save_for_backward(x, weight)
        ctx.conv = (stride, padding, dilation, bias is not None)
        return out.view(n, out_channels, out_h, out_w)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, weight = ctx.saved_tensors
        stride, padding, dilation, has_bias = ctx.conv
        n, _, h, w = x.shape
        out_channels, _, kh, kw = weight.shape
        g = grad_out.reshape(n, out_channels, -1)  # (N, O, L)
        grad_x = grad_w = grad_b = None
        if ctx.needs_input_grad[0]:
            grad_cols = weight.reshape(out_channels, -1).t() @ g  # (N, C*kh*kw, L)
            grad_x = F.fold(grad_cols, (h, w), (kh, kw), dilation=dilation, padding=padding, stride=stride)
        if ctx.needs_input_grad[1]:
            cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)
            grad_w = torch.einsum("nol,nkl->ok", g, cols).reshape(weight.shape)
        if has_bias and ctx.needs_input_grad[2]:
            grad_b = g.sum(dim=(0, 2))
        return grad_x, grad_w, grad_b, None, None, None


def unfold_conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
                  stride: int | Pair = 1, padding: int | Pair = 0, dilation: int | Pair = 1) -> torch.Tensor:
    """Drop-in for `F.conv2d(x, weight, bias, stride, padding, dilation)` with groups=1."""
    return Conv2dFunction.apply(x, weight, bias, _pair(stride), _pair(padding), _pair(dilation))


class Conv2d(nn.Conv2d):
    """`nn.Conv2d` (same parameters, init and state_dict keys) computed by `Conv2dFunction`.

    padding='same' with an even kernel pads one more pixel after than before, as PyTorch does.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.groups != 1 or self.padding_mode != "zeros":
            raise ConfigError("model.conv_impl=custom supports groups=1 and zero padding only; "
                              "use model.conv_impl=torch")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if torch.is_autocast_enabled(x.device.type):
            # Autocast would not reach into the Function's backward, so cast the inputs here
            # (these casts are recorded, gradients flow back to the float32 parameters) and
            # compute forward and backward in one dtype.
            dtype = torch.get_autocast_dtype(x.device.type)
            x, weight = x.to(dtype), weight.to(dtype)
            bias = None if bias is None else bias.to(dtype)
        padding = self.padding
        if padding == "same":
            x, padding = self._pad_same(x), (0, 0)
        elif padding == "valid":
            padding = (0, 0)
        with torch.autocast(x.device.type, enabled=False):
            return Conv2dFunction.apply(x, weight, bias, self.stride, padding, self.dilation)

    def _pad_same(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for d, k in zip(reversed(self.dilation), reversed(self.kernel_size)):  # F.pad takes last dim first
            total = d * (k - 1)
            pads += [total // 2, total - total // 2]
        return F.pad(x, pads) if any(pads) else x
