"""No-reference quality (NIQE, BRISQUE) of input vs restored frames: ``experiments/evaluate_noref.py``.

Score a folder: ``--config=experiments/configs/noref.py --config.input_dir=FRAMES [--config.restored_dir=OUT]``
(restored frames are matched to input frames by relative path). With no folder, the embedded scenes are degraded
by ET-Turb Table-1 draws (``synthetic`` below); variant ``noref.py:tiny`` makes that smaller, for smoke tests.
"""

import ml_collections
from ml_collections import config_dict

from experiments.configs.et_turb import synthesis_settings


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "default"
    if variant not in ("default", "tiny"):
        raise ValueError(f"noref.py variant must be 'default' or 'tiny'; got {variant!r}.")
    config = ml_collections.ConfigDict()
    config.variant = variant
    config.input_dir = config_dict.placeholder(str)  # folder of frames (sub-folders = clips); None: synthesize
    config.restored_dir = config_dict.placeholder(str)  # same relative paths as input_dir; None: no restored row
    config.recursive = True  # also score frames in sub-folders
    config.max_frames = config_dict.placeholder(int)  # None: every frame (the first N in sorted order otherwise)
    config.crop_border = 0  # px ignored on each side by NIQE (basicsr's crop_border)
    config.synthetic = ml_collections.ConfigDict(
        dict(
            seed=0,
            image_size=256 if variant == "default" else 128,  # NIQE needs >= 96 px
            scenes=("astronaut", "chelsea", "coffee", "rocket", "camera", "brick"),
            num_frames=6 if variant == "default" else 2,  # one Table-1 draw per frame
            batch_size=3 if variant == "default" else 2,
            wavelength=550e-9,  # m; not printed in the ET-Turb paper
            pixel_pitch=5e-6,  # m; not printed in the ET-Turb paper
            synthesis=synthesis_settings(),
        )
    )
    if variant == "tiny":
        config.synthetic.synthesis.blur_pad = 16
    return config
