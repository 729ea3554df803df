"""ET-Turb simulator: demo figures (Fig. 11-style synthesis grid, Fig. 3-style ET-MTF curves) and the video dataset.

Variants: ``et_turb.py`` (default, 256 px) and ``et_turb.py:tiny`` (64 px, for smoke tests) draw
figures; ``et_turb.py:dataset`` (tiny), ``:dataset_small`` and ``:dataset_full`` build the ET-Turb
video dataset (TFDS array_record) into WORKDIR/tfds.
"""

import ml_collections


def synthesis_settings() -> ml_collections.ConfigDict:
    """Numerical settings of turbjax.physics.SynthesisSettings."""
    return ml_collections.ConfigDict(
        dict(
            wave="spherical",
            alpha=1.0,
            num_psfs=6,
            blur_pad=32,
            include_diffraction=True,
            tilt_embed_factor=3.0,
            blur_correlation_px=None,
            max_blur_correlation_px=16.0,
            blur_eps=0.1,
            noise=False,
            noise_k=0.001,
            exposure_model="continuous",  # or "fixed" / "binary" (the seed's Table 3 ablation)
            fixed_exposure_s=1e-3,
        )
    )


DATASET_VARIANTS = ("dataset", "dataset_small", "dataset_full")


def dataset_config(variant: str = "dataset") -> ml_collections.ConfigDict:
    """The ET-Turb video dataset (turbjax.data.build_dataset).

    'dataset' is the tiny default (builds in about a minute on 2 CPU cores), 'dataset_small' a
    CPU-sized training set, 'dataset_full' the seed's scale (256 px clips; a TPU job).
    """
    sizes = {
        "dataset": dict(num_train=24, num_test=8, num_frames=8, image_size=96),
        "dataset_small": dict(num_train=512, num_test=64, num_frames=12, image_size=128),
        "dataset_full": dict(num_train=10000, num_test=500, num_frames=16, image_size=256),
    }[variant]
    config = ml_collections.ConfigDict()
    config.name = {"dataset": "tiny", "dataset_small": "small", "dataset_full": "full"}[variant]
    config.data_dir = None  # None: WORKDIR/tfds
    config.seed = 0
    config.num_train = sizes["num_train"]
    config.num_test = sizes["num_test"]
    config.per_device = 1  # examples per device per generation step (fixes the compiled program)
    config.keep_cache = False  # keep the per-chunk generation cache after the TFDS write
    config.video = ml_collections.ConfigDict(
        dict(
            num_frames=sizes["num_frames"],
            image_size=sizes["image_size"],
            fps=30.0,
            max_drift_px=128,  # canvases exact for this total drift (px); larger drifts decorrelate
            wavelength=550e-9,  # m; not printed in the seed
            pixel_pitch=5e-6,  # m; not printed in the seed
        )
    )
    config.synthesis = synthesis_settings()
    config.synthesis.blur_pad = 16 if sizes["image_size"] < 128 else 32
    config.source = ml_collections.ConfigDict(
        dict(
            kind="embedded",  # embedded | images | sequences | tfds
            scenes=("astronaut", "rocket", "camera", "brick", "grass", "gravel", "coins", "hubble_deep_field"),
            test_scenes=("chelsea", "coffee"),  # held out from training
            path=None,  # folder for 'images' / 'sequences'
            tfds_name=None,  # e.g. 'coco/2017' (prepared locally) for 'tfds'
            tfds_split="train",
            tfds_test_split="validation",
            tfds_data_dir=None,
            max_camera_px=1.5,  # synthetic camera pan of stills, px/frame
            max_object_px=3.0,  # synthetic object motion, px/frame
            max_images=None,
        )
    )
    return config


def pipeline_config(
    mode: str = "records", dataset: str = "dataset", batch_size: int = 8, crop_size: int | None = 64
) -> ml_collections.ConfigDict:
    """Batches of 2N+1-frame windows (turbjax.data.make_pipeline) over ``dataset_config(dataset)``."""
    config = ml_collections.ConfigDict()
    config.mode = mode  # 'records' (read the built dataset) or 'online' (synthesize on device)
    config.dataset = dataset_config(dataset)
    config.data_dir = None  # TFDS data_dir holding the dataset (records mode); None: dataset.data_dir
    config.split = "train"
    config.batch_size = batch_size  # global, over all processes
    config.crop_size = crop_size  # random crop side, px (the seeds train on 256 / 240; None = whole frame)
    config.half_window = 2  # N: windows of 2N+1 = 5 frames (JDATT)
    config.shuffle = True
    config.seed = 0
    config.num_epochs = None  # records mode: None = repeat forever
    config.num_steps = None  # online mode: None = forever
    config.read_threads = 4
    config.prefetch = 16
    config.fields = None  # None: every key; or a tuple such as ('degraded', 'clean', 'tilt_field')
    return config


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "default"
    if variant not in ("default", "tiny", *DATASET_VARIANTS):
        raise ValueError(f"et_turb.py variant must be 'default', 'tiny' or one of {DATASET_VARIANTS}; got {variant!r}.")
    config = ml_collections.ConfigDict()
    config.variant = variant
    config.mode = "dataset" if variant in DATASET_VARIANTS else "figures"
    if variant in DATASET_VARIANTS:
        config.dataset = dataset_config(variant)
        return config
    config.seed = 0
    config.image_size = 256 if variant == "default" else 64
    config.scenes = ("astronaut", "chelsea", "coffee", "rocket", "camera", "brick")
    config.num_draws = 6 if variant == "default" else 2  # Table-1 draws in the synthesis grid
    config.batch_size = 3 if variant == "default" else 2
    config.wavelength = 550e-9  # m; not printed in the seed
    config.pixel_pitch = 5e-6  # m; not printed in the seed
    config.synthesis = synthesis_settings()
    if variant == "tiny":
        config.synthesis.blur_pad = 16
    # Fig. 3: the seed's appendix A.2 imaging setup (500 m, f = 300 mm, F/8, 50 m, 5 m/s).
    config.mtf = ml_collections.ConfigDict(
        dict(
            exposure_times_ms=(0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 40.0),
            focal_length=0.3,
            f_number=8.0,
            distance=500.0,
            height=50.0,
            wind_speed=5.0,
            cn2=1e-13,
            num_freqs=128,
        )
    )
    return config
