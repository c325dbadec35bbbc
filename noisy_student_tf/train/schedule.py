"""Upstream's learning-rate schedule (upstream main.py model_fn and utils.py)."""

import math
from typing import Optional

import keras

WARMUP_EPOCHS = 5
DECAY_FACTOR = 0.97


def decay_epochs_for(
    train_ratio: float,
    final_base_lr: Optional[float],
    base_learning_rate: float,
    train_steps: int,
    train_batch_size: int,
    num_train_images: int,
) -> float:
    """Epochs between 0.97x decays: 2.4 x train_ratio, or chosen to reach final_base_lr.

    The final_base_lr branch keeps upstream's arithmetic (batch not scaled by the label sample
    prob, warmup subtracted from the epoch count), so runs reproduce upstream's LR curve.
    """
    if final_base_lr is None:
        return 2.4 * train_ratio
    total_epochs = train_steps * train_batch_size / num_train_images - WARMUP_EPOCHS
    num_decays = math.log(final_base_lr / base_learning_rate) / math.log(DECAY_FACTOR)
    if total_epochs <= 0 or num_decays <= 0:
        raise ValueError(
            f"final_base_lr={final_base_lr} needs more than {WARMUP_EPOCHS} epochs of training and "
            f"a value below base_learning_rate={base_learning_rate}"
        )
    return total_epochs / num_decays


class UpstreamLRSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup for 5 epochs, then a 0.97 staircase decay every `decay_epochs` epochs.

    lr(s) = scaled_lr * s / W             for s < W, W = int(5 * steps_per_epoch)
          = scaled_lr * 0.97^floor(s / D) otherwise, D = steps_per_epoch * decay_epochs
    with s = step + start_from_step. The staircase counts the warmup steps, as upstream does.
    """

    def __init__(
        self,
        scaled_lr: float,
        steps_per_epoch: float,
        decay_epochs: float,
        start_from_step: int = 0,
        warmup_epochs: float = WARMUP_EPOCHS,
        decay_factor: float = DECAY_FACTOR,
    ):
        self.scaled_lr = float(scaled_lr)
        self.steps_per_epoch = float(steps_per_epoch)
        self.decay_epochs = float(decay_epochs)
        self.start_from_step = int(start_from_step)
        self.warmup_epochs = float(warmup_epochs)
        self.decay_factor = float(decay_factor)

    def __call__(self, step):
        ops = keras.ops
        s = ops.cast(step, "float32") + float(self.start_from_step)
        warmup_steps = float(int(self.warmup_epochs * self.steps_per_epoch))
        decay_steps = self.steps_per_epoch * self.decay_epochs
        decayed = self.scaled_lr * ops.power(self.decay_factor, ops.floor(s / decay_steps))
        if warmup_steps <= 0:
            return decayed
        warm = self.scaled_lr * s / warmup_steps
        return ops.where(s < warmup_steps, warm, decayed)

    def get_config(self):
        return {
            "scaled_lr": self.scaled_lr,
            "steps_per_epoch": self.steps_per_epoch,
            "decay_epochs": self.decay_epochs,
            "start_from_step": self.start_from_step,
            "warmup_epochs": self.warmup_epochs,
            "decay_factor": self.decay_factor,
        }
