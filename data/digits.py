"""scikit-learn's bundled 8x8 digits, upscaled: the default data set, works offline."""

from __future__ import annotations

import numpy as np
import torch

from data.base import ImageDataset, ImageSplits, resize_uint8


class Digits(ImageDataset):
    """1,797 greyscale digits from `sklearn.datasets.load_digits`, with a stratified val split."""

    def class_names(self) -> list[str]:
        return [str(d) for d in range(10)]

    def _load(self) -> ImageSplits:
        from sklearn.datasets import load_digits

        bunch = load_digits()
        # 0..16 intensities -> 0..255 uint8, then bilinear upscale to the model's input size.
        images = torch.from_numpy(np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8))[:, None]
        images = resize_uint8(images, self.image_size)
        if self.channels == 3:
            images = images.expand(-1, 3, -1, -1).contiguous()
        labels = torch.from_numpy(bunch.target.astype(np.int64))
        train_idx, val_idx = self.stratified_split(bunch.target)
        return ImageSplits(images[train_idx], labels[train_idx], images[val_idx], labels[val_idx],
                           classes=[str(d) for d in range(10)])
