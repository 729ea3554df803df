"""Training infrastructure shared by every experiment: sharding, checkpoints, the generic loop."""

from turbjax.train.checkpoint import Checkpoints
from turbjax.train.loop import TrainState, run_training
from turbjax.train.sharding import data_mesh, replicate, shard_batch

__all__ = ["Checkpoints", "TrainState", "data_mesh", "replicate", "run_training", "shard_batch"]
