"""JDATT: ``python -m experiments.distill --config=experiments/configs/jdatt.py:tiny --workdir=DIR``.

Variants: ``tiny`` (the README's main job: under 15 minutes on 2 CPU cores, 64 px), ``small``,
``medium``, ``large`` (student sizes of the seed's Table 3, 128 px, CPU-hours), ``paper`` (the
seed's settings: 256 px crops, batch 1 with 4-step accumulation, lr 1.5e-4, 100 epochs with 10
warm-up; meant for accelerators) and ``micro`` (a smoke-test size: ``tiny`` with 8 / 4 clips of 32 px,
3 frames, a 2-clip batch on one device and 2 steps per stage; the tests and the notebooks' CI setting,
not an experiment).
"""

import ml_collections

VARIANTS = ("tiny", "small", "medium", "large", "paper", "micro")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "tiny"
    if variant not in VARIANTS:
        raise ValueError(f"jdatt.py variant must be one of {VARIANTS}; got {variant!r}.")
    if variant == "micro":
        config = get_config("tiny")
        config.variant = "micro"
        config.data.update(dict(num_train=8, num_test=4, image_size=32, num_frames=3))
        config.train.update(dict(batch_size=2, num_devices=1, log_every=1))
        for stage in config.train.steps:
            config.train.steps[stage] = 2
        return config
    tiny = variant == "tiny"
    config = ml_collections.ConfigDict()
    config.task = "jdatt"
    config.variant = variant
    config.seed = 0
    student = {"tiny": "tiny", "small": "small", "medium": "medium", "large": "large", "paper": "small"}[variant]
    config.models = ml_collections.ConfigDict(
        dict(
            teacher_restorer="tiny_teacher" if tiny else "teacher",
            teacher_detector="small" if tiny else "large",
            student_restorer=student,
            student_detector="tiny" if tiny else {"small": "small", "medium": "medium"}.get(student, "large"),
        )
    )
    config.detector_overrides = ml_collections.ConfigDict({})
    # lax.scan beats the associative scan on CPU by ~10x at these sizes; accelerators want 'associative'.
    config.restorer_overrides = ml_collections.ConfigDict(dict(scan_method="sequential" if tiny else "associative"))
    config.data = ml_collections.ConfigDict(
        dict(
            num_train=512 if tiny else 4096,
            num_test=96 if tiny else 503,  # the seed validates on 503 samples
            image_size=64 if tiny else (256 if variant == "paper" else 128),
            num_frames=5,  # 2N+1 window, the centre frame is restored (the seed's default)
            max_objects=5,
        )
    )
    # Feature maps distilled by CWD and MGD, by name (turbjax.models.restorers / detector FEATURE_NAMES).
    config.taps = ml_collections.ConfigDict(dict(restorer=("enhance2",), detector=("fused",)))
    # Term weights (the seed prints none) and distillation hyper-parameters.
    config.weights = ml_collections.ConfigDict(
        dict(
            charbonnier=1.0, detection=0.05, cwd=0.05, mgd=1.0, kl=0.05, tau_cwd=1.0, tau_kl=1.0,
            mgd_alpha=2e-5, mask_ratio=0.65, charbonnier_eps=1e-3,
        )
    )  # fmt: skip
    config.detection_loss = ml_collections.ConfigDict(dict(labels=1.0, l1=5.0, giou=2.0))
    # The seed: AdamW, weight decay 0.01, cosine with warm-up, lr 1.5e-4, batch 1 x 4 accumulation.
    config.optim = ml_collections.ConfigDict(
        dict(
            learning_rate=1e-3 if tiny else 4e-4,
            warmup_steps=50 if tiny else 500,
            weight_decay=0.01,
            clip_norm=1.0,
            accumulate=1,
        )
    )
    # tiny: sized to finish in ~12 minutes on 2 CPU cores (the 3D convolutions dominate a restorer step).
    # Joint gets as many steps as the two separate stages together.
    steps = dict(teacher_restorer=200, teacher_detector=500, separate_restorer=120, separate_detector=200, joint=320)
    if not tiny:
        steps = {name: 20 * value for name, value in steps.items()}
    config.train = ml_collections.ConfigDict(
        dict(
            batch_size=8,
            num_devices=None,  # None = every device (batch_size must divide by it)
            steps=ml_collections.ConfigDict(steps),
            log_every=50,
            checkpoint_every=500,
            flip=True,
            top_k=100,
        )
    )
    if variant == "paper":
        config.optim.learning_rate = 1.5e-4
        config.optim.accumulate = 4
        config.train.batch_size = 8  # one per device on an 8-core TPU host; x4 accumulation
        epochs = lambda n: n * config.data.num_train // config.train.batch_size  # noqa: E731
        config.optim.warmup_steps = epochs(10) // config.optim.accumulate
        config.train.steps = ml_collections.ConfigDict({name: epochs(100) for name in steps})
    return config
