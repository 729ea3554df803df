"""Clean-image sources, dataset builders and input pipelines."""

from turbjax.data.samples import EMBEDDED_SCENES, embedded_images

__all__ = ["EMBEDDED_SCENES", "embedded_images"]
