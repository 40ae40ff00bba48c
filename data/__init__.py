"""Data sets as resident uint8 tensors: decode once, cache on disk, keep in memory."""

from data.base import ImageDataset, ImageSplits

__all__ = ["ImageDataset", "ImageSplits"]
