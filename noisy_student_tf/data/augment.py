"""Training-time input noise: which augmentation runs, and where in the pipeline.

`augment_name` as upstream: None (or '') gives crop + flip only, `v1` adds RandAugment
(randaugment.py). `keras_cv` and `keras` use those libraries' RandAugment layers instead, for
comparison only: their ops and magnitude scale differ from upstream's (magnitude M maps to
min(M / 10, 1) there), see WORKSPACE.md and benchmarks/input_pipeline.py.
"""

import dataclasses
from typing import Optional

import tensorflow as tf

from noisy_student_tf.data import randaugment

AUGMENT_NAMES = ("v1", "keras_cv", "keras")


@dataclasses.dataclass(frozen=True)
class AugmentConfig:
    name: Optional[str] = None  # None | 'v1' | 'keras_cv' | 'keras'
    magnitude: float = 27  # randaug_mag
    num_layers: int = 2  # randaug_layer
    cutout: bool = True  # cutout_op
    remove_aug: bool = False  # train with eval preprocessing
    upstream_contrast: bool = False  # reproduce upstream's contrast bug

    def __post_init__(self):
        if self.name == "":
            object.__setattr__(self, "name", None)
        if self.name is not None and self.name not in AUGMENT_NAMES:
            raise ValueError(f"augment_name={self.name!r}; expected one of None, "
                             f"{', '.join(AUGMENT_NAMES)}")
        if self.magnitude < 0:
            raise ValueError(f"randaug_mag={self.magnitude} must be >= 0")
        if self.num_layers < 0:
            raise ValueError(f"randaug_layer={self.num_layers} must be >= 0")

    @property
    def active(self) -> bool:
        return self.name is not None and not self.remove_aug


def _library_layer(cfg: AugmentConfig):
    factor = min(cfg.magnitude / randaugment.MAX_LEVEL, 1.0)
    if cfg.name == "keras_cv":
        import keras_cv  # local: heavy import, comparison only

        return keras_cv.layers.RandAugment(
            value_range=(0, 255), augmentations_per_image=cfg.num_layers, magnitude=factor)
    import keras

    return keras.layers.RandAugment(value_range=(0, 255), num_ops=cfg.num_layers, factor=factor)


def image_fn(cfg: AugmentConfig, size: int, small_image: bool):
    """Per-image augmentation `(uint8 [S, S, 3], seed [2]) -> uint8`, or None.

    Large-image `v1` returns None: it runs after batching (batch_fn), which is faster.
    """
    if not cfg.active or (cfg.name == "v1" and not small_image):
        return None
    if cfg.name != "v1":
        layer = _library_layer(cfg)
        return lambda image, seed: tf.cast(
            tf.clip_by_value(layer(tf.cast(image, tf.float32)), 0, 255), tf.uint8)
    const = size // 8  # upstream small-image path: translate and cutout constants S // 8

    def augment(image, seed):
        seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2)
        image = randaugment.distort_image_with_randaugment(
            image, cfg.num_layers, cfg.magnitude, cfg.cutout, seeds[0], const, const,
            cfg.upstream_contrast)
        # upstream adds one more, unconditional Cutout of pad S // 4 on small images.
        u = tf.random.stateless_uniform([1, 3], seeds[1])
        return randaugment.cutout(image[None], size // 4, u)[0]

    return augment


def batch_fn(cfg: AugmentConfig, small_image: bool):
    """Batched `v1` for large images `(uint8 [B, S, S, 3], seed [2]) -> uint8`, or None."""
    if not cfg.active or cfg.name != "v1" or small_image:
        return None
    return lambda images, seed: randaugment.distort_batch_with_randaugment(
        images, cfg.num_layers, cfg.magnitude, cfg.cutout, seed,
        upstream_contrast=cfg.upstream_contrast)
