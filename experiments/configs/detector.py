"""Detector training: ``python -m experiments.train --config=experiments/configs/detector.py:small --workdir=DIR``.

Variants ``tiny`` (CPU, minutes), ``small`` / ``medium`` / ``large`` (the JDATT student sizes
2.6 / 9.6 / 20.2 M; large is the teacher). Data: the embedded detection scenes (default) or a
COCO-format folder (``data.source = 'coco'``, ``data.coco_root``).
"""

import ml_collections

VARIANTS = ("tiny", "small", "medium", "large")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    variant = arg or "tiny"
    if variant not in VARIANTS:
        raise ValueError(f"detector.py variant must be one of {VARIANTS}; got {variant!r}.")
    tiny = variant == "tiny"
    config = ml_collections.ConfigDict()
    config.task = "detector"
    config.seed = 0
    config.model = ml_collections.ConfigDict(dict(variant=variant, num_classes=None, overrides={}))  # None: from data
    config.data = ml_collections.ConfigDict(
        dict(
            source="embedded",  # 'embedded' (procedural objects on the scikit-image scenes) or 'coco'
            input="degraded",  # train and evaluate on 'clean' frames or the centre frame of 'degraded' clips
            # stream: compose scenes on device from a bank of rendered objects (endless, no memorising);
            # otherwise train on num_train fixed scenes. The test split is always fixed held-out scenes.
            stream=True,
            num_sprites=4096 if tiny else 16384,  # objects rendered once for the stream
            grid=2,  # stream: at most grid^2 objects, one per cell
            occupancy=0.6,  # stream: probability that a cell holds an object
            num_train=1024 if tiny else 4096,
            num_test=128 if tiny else 512,
            image_size=64 if tiny else 128,  # divisible by 32
            num_frames=5,  # clip length of the turbulence videos (the centre frame is the input)
            max_objects=5,
            max_boxes=8,  # targets padded to this many boxes
            coco_root=None,
            coco_train_split="train2017",
            coco_test_split="val2017",
        )
    )
    config.optim = ml_collections.ConfigDict(
        dict(learning_rate=1e-3 if tiny else 4e-4, warmup_steps=100, weight_decay=1e-4, clip_norm=0.1)
    )
    config.loss = ml_collections.ConfigDict(
        dict(
            labels=1.0,
            l1=5.0,
            giou=2.0,
            cost_class=2.0,
            cost_l1=5.0,
            cost_giou=2.0,
            alpha=0.25,
            gamma=2.0,
            classification="iou_aware",  # the seed's eq. 2; 'focal' for the Deformable-DETR term
        )
    )
    config.train = ml_collections.ConfigDict(
        dict(
            batch_size=32 if tiny else 16,
            num_devices=None,  # None = every device (batch_size must divide by it)
            num_steps=1800 if tiny else 20000,  # tiny: under 10 minutes on 2 CPU cores
            log_every=50,
            eval_every=900 if tiny else 2000,
            checkpoint_every=500,
            top_k=100,  # detections per image kept for mAP (COCO maxDets)
            flip=True,  # random horizontal flips
        )
    )
    return config
