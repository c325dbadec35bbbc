"""Image preprocessing as upstream preprocessing.py.

Every random choice takes an explicit stateless `seed` ([2] int tensor), so a pipeline is
reproducible from one integer. Outputs are uint8 [S, S, 3]: 4x less data to the device, where
normalisation by the task mean/std happens (in the train/eval step).
"""

import tensorflow as tf

CROP_PADDING = 32  # upstream: eval centre crop keeps S / (S + 32) of the shorter side
SMALL_IMAGE_PAD = 4  # upstream: 32x32 training reflect-pads 4 pixels, then crops back


def decode(encoded):
    """JPEG, PNG, GIF (first frame) or BMP bytes -> uint8 [H, W, 3]."""
    image = tf.io.decode_image(encoded, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def resize_bicubic(image, size: int):
    """TF1 bicubic resize (no align_corners, no half-pixel centres), as upstream used."""
    resized = tf.raw_ops.ResizeBicubic(
        images=tf.cast(image, tf.float32)[None], size=[size, size],
        align_corners=False, half_pixel_centers=False,
    )
    return resized[0]


def center_crop(image, size: int):
    """Eval path for large images: centre crop of side floor(S / (S + 32) * min(h, w)), then a
    bicubic resize to S x S. Returns float32 [S, S, 3]."""
    shape = tf.shape(image)
    h, w = shape[0], shape[1]
    side = tf.cast(
        (size / (size + CROP_PADDING)) * tf.cast(tf.minimum(h, w), tf.float32), tf.int32
    )
    top = (h - side + 1) // 2
    left = (w - side + 1) // 2
    crop = tf.image.crop_to_bounding_box(image, top, left, side, side)
    return resize_bicubic(crop, size)


def random_crop(image, size: int, seed):
    """Large-image training crop: a distorted bounding box (area 8%-100%, aspect 3/4-4/3,
    min_object_covered 0.1, 10 attempts), bicubic-resized to S; falls back to the centre crop when
    sampling returned the whole image, as upstream does."""
    shape = tf.shape(image)
    begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.constant([0.0, 0.0, 1.0, 1.0], tf.float32, [1, 1, 4]),
        seed=seed,
        min_object_covered=0.1,
        aspect_ratio_range=(3.0 / 4.0, 4.0 / 3.0),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    crop = tf.slice(image, begin, crop_size)
    failed = tf.reduce_all(tf.equal(tf.shape(crop), shape))
    return tf.cond(
        failed, lambda: center_crop(image, size), lambda: resize_bicubic(crop, size)
    )


def _as_size(image, size: int):
    """Small-image path expects S x S records; other sizes are bicubic-resized (upstream would
    fail on them). Returns uint8 [S, S, 3]."""
    shape = tf.shape(image)
    same = tf.logical_and(tf.equal(shape[0], size), tf.equal(shape[1], size))
    image = tf.cond(same, lambda: tf.cast(image, tf.uint8), lambda: to_uint8(
        resize_bicubic(image, size), truncate=False))
    return tf.reshape(image, [size, size, 3])


def to_uint8(image, truncate: bool):
    """Clip to [0, 255] and cast. Upstream truncates before RandAugment; without augmentation
    it kept float pixels, which we round instead so uint8 (4x less data) goes to the device."""
    image = tf.clip_by_value(tf.cast(image, tf.float32), 0.0, 255.0)
    return tf.cast(image if truncate else tf.round(image), tf.uint8)


def preprocess_for_train(image, size: int, small_image: bool, flip: bool, seed,
                         augment=None, truncate: bool = False):
    """uint8 [H, W, 3] -> uint8 [S, S, 3] with upstream's training crop and flip.

    Args:
        augment: optional per-image `(uint8 image, seed) -> uint8` (augment.image_fn). On small
            images it runs before the pad-and-crop, on large ones after the crop and flip, as
            upstream orders them.
        truncate: truncate rather than round the float crop (upstream, before RandAugment).
    """
    seeds = tf.random.experimental.stateless_split(seed, 3)
    if small_image:
        image = _as_size(image, size)
        if augment is not None:
            image = augment(image, seeds[2])
        p = SMALL_IMAGE_PAD
        image = tf.pad(image, [[p, p], [p, p], [0, 0]], mode="REFLECT")
        image = tf.image.stateless_random_crop(image, [size, size, 3], seed=seeds[0])
    else:
        image = to_uint8(random_crop(image, size, seeds[0]), truncate or augment is not None)
    if flip:
        image = tf.image.stateless_random_flip_left_right(image, seed=seeds[1])
    if augment is not None and not small_image:
        image = augment(image, seeds[2])
    return tf.reshape(image, [size, size, 3])


def preprocess_for_eval(image, size: int, small_image: bool):
    """uint8 [H, W, 3] -> uint8 [S, S, 3]: centre crop (large) or unchanged (small)."""
    if small_image:
        return _as_size(image, size)
    return tf.reshape(to_uint8(center_crop(image, size), truncate=False), [size, size, 3])


def normalize(images, mean_rgb, stddev_rgb):
    """uint8 (or float) images -> float32 (x - mean) / std per RGB channel. Runs on the device
    side (upstream does it in model_fn); every model input goes through it."""
    images = tf.cast(images, tf.float32)
    return (images - tf.constant(mean_rgb, tf.float32)) / tf.constant(stddev_rgb, tf.float32)
