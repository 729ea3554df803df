"""Clean-image sources, dataset builders and input pipelines."""

from turbjax.data.samples import EMBEDDED_SCENES, embedded_images
from turbjax.data.sources import DataSourceError, embedded_clips, folder_images, folder_sequences, tfds_images

__all__ = [
    "EMBEDDED_SCENES",
    "DataSourceError",
    "embedded_clips",
    "embedded_images",
    "folder_images",
    "folder_sequences",
    "tfds_images",
]
