"""Clean-image sources, dataset builders and input pipelines."""

from turbjax.data.builder import build_dataset, dataset_dir, open_split
from turbjax.data.clean import CleanClips
from turbjax.data.coco import coco_detection
from turbjax.data.pipeline import make_pipeline
from turbjax.data.samples import EMBEDDED_SCENES, embedded_images
from turbjax.data.sources import DataSourceError, embedded_clips, folder_images, folder_sequences, tfds_images

__all__ = [
    "EMBEDDED_SCENES",
    "CleanClips",
    "build_dataset",
    "coco_detection",
    "dataset_dir",
    "make_pipeline",
    "open_split",
    "DataSourceError",
    "embedded_clips",
    "embedded_images",
    "folder_images",
    "folder_sequences",
    "tfds_images",
]
