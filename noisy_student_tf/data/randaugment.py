"""RandAugment with upstream randaugment.py's semantics.

`distort_image_with_randaugment(image, num_layers, magnitude)` applies `num_layers` ops, each drawn
uniformly from upstream's 15 (16 with Cutout), all at the same magnitude M (level M/10; M above 10
extrapolates, as upstream's scripts use 27). `distort_batch_with_randaugment` does the same for a
batch [N, H, W, 3], each image drawing its own ops: the input pipeline uses it after batching.
Randomness is stateless: the same seed gives the same images, eagerly or inside tf.data.

Upstream cases decided explicitly here (M > 10, section 12.24): posterize bits are clamped to
[0, 8] (0 bits gives black, 8 the identity) and solarize thresholds of 256 and above are the
identity. Contrast's degenerate image is the rounded mean grey level, as PIL does; upstream used
(pixel count) / 256 by mistake, which `upstream_contrast=True` reproduces.

Speed (issues 3 and 17): ops are written on batches. Per layer the batch is partitioned by drawn
op (tf.dynamic_partition), each op runs once on its sub-batch, and the results are stitched back;
the one-image function runs only its drawn op (tf.switch_case). Each costly op computes a small
float32 part with upstream's arithmetic (a 256-entry table per image and channel, a 256 x 256
blend table, each output pixel's source pixel) and applies it with integer-only XLA programs per
image (randaugment_kernels.py); bit ops stay plain TF ops.

AutoContrast follows upstream's float32 formula (it used PIL's float64 one before: one level apart
on ~2% of pixels). Translations by a half pixel now equal upstream's warp (ties round away from
zero per pixel; they were a whole-pixel shift).
"""

import functools

import numpy as np
import tensorflow as tf

from noisy_student_tf.data import randaugment_kernels as kernels
from noisy_student_tf.data.randaugment_geometry import (cutout, rotate, shear_x,
                                                       shear_y, translate_x, translate_y)

MAX_LEVEL = 10.0
ENHANCE_OPS = ("Color", "Contrast", "Brightness", "Sharpness")
SIGNED_OPS = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")
OP_NAMES = (
    "AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color",
    "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY",
    "SolarizeAdd", "Cutout",
)


# ---------------------------------------------------------------- helpers
def _check_images(images, rank: int):
    if images.dtype != tf.uint8:
        raise ValueError(f"RandAugment needs uint8 images, got dtype {images.dtype.name}")
    if images.shape.rank != rank or images.shape[-1] != 3:
        want = "[H, W, 3]" if rank == 3 else "[N, H, W, 3]"
        raise ValueError(f"RandAugment needs {want} images, got shape {images.shape}")


def blend(image1, image2, factor):
    """image1 + factor * (image2 - image1) in float32, cast to uint8 like upstream (truncated;
    clipped to [0, 255], which only matters when extrapolating). Works on any shapes that
    broadcast; Color, Contrast and Sharpness apply it through tables of its values."""
    a = tf.cast(image1, tf.float32)
    temp = a + factor * (tf.cast(image2, tf.float32) - a)
    return tf.cast(tf.clip_by_value(temp, 0.0, 255.0), tf.uint8)


@functools.lru_cache(maxsize=32)
def _blend_table(factor: float):
    """blend(a, b, factor) for every pair of uint8 values: [65536] at a * 256 + b (NumPy, made
    once per factor with TF's own ops, at trace time)."""
    with tf.init_scope():
        a = tf.range(65536) // 256
        return blend(a, tf.range(65536) % 256, factor).numpy()


def _per_channel(table, n):
    """One table [256] (or one per image, [N, 256]) for every image and channel: [N, 3, 256]."""
    table = tf.convert_to_tensor(table)
    if table.shape.rank == 1:
        table = table[None]
    return tf.broadcast_to(table[:, None, :], [n, 3, 256])


# ---------------------------------------------------------------- ops on [N, H, W, 3] uint8
def autocontrast(images, _=None, u=None):
    """Per image and channel, stretch [min, max] to [0, 255]: upstream's float32
    x * (255 / (hi - lo)) - lo * scale, truncated; identity where max <= min. Applied as a
    table of its values for x = 0..255."""
    lo = tf.cast(tf.reduce_min(images, axis=[1, 2]), tf.float32)  # [N, 3]
    hi = tf.cast(tf.reduce_max(images, axis=[1, 2]), tf.float32)
    scale = tf.where(hi > lo, 255.0 / tf.maximum(hi - lo, 1.0), 1.0)
    offset = tf.where(hi > lo, -lo * scale, 0.0)
    values = tf.range(256, dtype=tf.float32)
    table = values * scale[..., None] + offset[..., None]  # [N, 3, 256]
    table = tf.cast(tf.clip_by_value(table, 0.0, 255.0), tf.uint8)
    return kernels.lookup(images, table)


def equalize(images, _=None, u=None):
    """PIL-style per-channel histogram equalisation (PIL ImageOps.equalize), per image."""
    n = tf.shape(images)[0]
    index = kernels.table_index(images)  # bin of each value: image * 768 + channel * 256 + value
    hist = tf.reshape(tf.math.bincount(tf.reshape(index, [-1]), minlength=n * 768,
                                       maxlength=n * 768), [n, 3, 256])
    bins = tf.range(256, dtype=hist.dtype)
    last = tf.reduce_max(tf.where(hist > 0, bins, -1), axis=2)
    last_count = tf.gather(hist, last, batch_dims=2)
    step = ((tf.reduce_sum(hist, axis=2) - last_count) // 255)[..., None]  # [N, 3, 1]
    safe = tf.maximum(step, 1)
    lut = (tf.cumsum(hist, axis=2) + safe // 2) // safe
    lut = tf.clip_by_value(tf.concat([tf.zeros_like(lut[..., :1]), lut[..., :-1]], -1), 0, 255)
    lut = tf.where(step == 0, tf.broadcast_to(bins, tf.shape(lut)), lut)
    return kernels.lookup(images, tf.cast(lut, tf.uint8))


def invert(images, _=None, u=None):
    return tf.bitwise.invert(images)  # 255 - x


def posterize(images, bits, u=None):
    """Keep the top `bits` bits (clamped to [0, 8]; 0 bits gives black)."""
    bits = min(max(int(bits), 0), 8)
    mask = (255 << (8 - bits)) & 255
    return tf.bitwise.bitwise_and(images, tf.constant(mask, tf.uint8))


def solarize(images, threshold, u=None):
    """Pixels >= threshold become 255 - x (= x XOR 255); thresholds >= 256 are the identity."""
    threshold = int(threshold)
    if threshold > 255:
        return images
    flip = tf.cast(images >= tf.constant(max(threshold, 0), tf.uint8), tf.uint8) * 255
    return tf.bitwise.bitwise_xor(images, flip)


def solarize_add(images, addition, u=None, threshold=128):
    """Pixels < 128 get x + addition, clipped to [0, 255] (an integer table)."""
    values = np.arange(256)
    table = np.where(values < threshold, np.clip(values + int(addition), 0, 255), values)
    return kernels.lookup(images, _per_channel(table.astype(np.uint8), tf.shape(images)[0]))


def grayscale(images):
    """tf.image.rgb_to_grayscale (uint8 [..., 1]), upstream's degenerate image for Color,
    computed with channel slices instead of a [.., 3] x [3] tensordot (same weights and the same
    float-to-uint8 conversion, x * 255.5 truncated)."""
    def channel(c):
        return tf.cast(images[..., c:c + 1], tf.float32) * (1.0 / 255.0)

    gray = channel(0) * 0.2989 + channel(1) * 0.5870 + channel(2) * 0.1140
    return tf.cast(tf.clip_by_value(gray * 255.5, 0.0, 255.0), tf.uint8)


def color(images, factor, u=None):
    """Blend with the grey image (tf.image.rgb_to_grayscale)."""
    return kernels.pair_lookup(images, grayscale(images), tf.constant(_blend_table(factor)))


def contrast(images, factor, u=None, upstream_bug: bool = False):
    """Blend with a constant grey image at the mean grey level (PIL ImageEnhance.Contrast)."""
    if upstream_bug:  # upstream: sum(histogram) / 256 = pixel count / 256
        pixels = tf.cast(tf.shape(images)[1] * tf.shape(images)[2], tf.float32)
        mean = tf.floor(tf.clip_by_value(pixels / 256.0, 0.0, 255.0))
        mean = tf.fill([tf.shape(images)[0], 1], mean)
    else:
        gray = tf.cast(grayscale(images), tf.float32)
        mean = tf.floor(tf.reduce_mean(gray, axis=[1, 2, 3])[:, None] + 0.5)  # [N, 1]
    table = blend(mean, tf.range(256, dtype=tf.float32)[None], factor)  # [N, 256]
    return kernels.lookup(images, _per_channel(table, tf.shape(images)[0]))


def brightness(images, factor, u=None):
    """Blend with black (plain float ops: as fast as a table here)."""
    return blend(tf.zeros([], tf.uint8), images, factor)


def sharpness(images, factor, u=None):
    """Blend with the image smoothed by [[1,1,1],[1,5,1],[1,1,1]]/13 (border pixels kept)."""
    kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
    kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
    smooth = tf.nn.depthwise_conv2d(tf.cast(images, tf.float32), kernel, [1, 1, 1, 1], "VALID")
    smooth = tf.cast(tf.clip_by_value(smooth, 0.0, 255.0), tf.uint8)
    shape = tf.shape(images)  # (an empty batch comes back from the conv with the wrong shape)
    smooth = tf.reshape(smooth, [shape[0], shape[1] - 2, shape[2] - 2, 3])
    return kernels.inner_pair_lookup(images, smooth, tf.constant(_blend_table(factor)))


def level_args(magnitude: float, translate_const: float, cutout_const: float) -> dict:
    """Upstream's level_to_arg at level M / 10 (signs are drawn per application)."""
    level = float(magnitude) / MAX_LEVEL
    enhance = level * 1.8 + 0.1
    return {
        "Rotate": level * 30.0,
        "Posterize": int(level * 4),
        "Solarize": int(level * 256),
        "SolarizeAdd": int(level * 110),
        "Color": enhance, "Contrast": enhance, "Brightness": enhance, "Sharpness": enhance,
        "ShearX": level * 0.3, "ShearY": level * 0.3,
        "TranslateX": level * float(translate_const), "TranslateY": level * float(translate_const),
        "Cutout": int(level * cutout_const),
    }


def _op_fns(upstream_contrast: bool) -> dict:
    return {
        "AutoContrast": autocontrast, "Equalize": equalize, "Invert": invert,
        "Rotate": rotate, "Posterize": posterize, "Solarize": solarize,
        "Color": color, "Brightness": brightness, "Sharpness": sharpness,
        "Contrast": lambda im, f, uu: contrast(im, f, uu, upstream_contrast),
        "ShearX": shear_x, "ShearY": shear_y, "TranslateX": translate_x,
        "TranslateY": translate_y, "SolarizeAdd": solarize_add, "Cutout": cutout,
    }


def apply_op(name: str, images, magnitude: float, u, translate_const: float = 100,
             cutout_const: float = 40, upstream_contrast: bool = False):
    """Applies one named op at magnitude M to uint8 images [N, H, W, 3].

    `u` [N, 3] holds each image's uniforms: u[:, 0] draws the sign, u[:, 1:] the Cutout centre.
    """
    arg = level_args(magnitude, translate_const, cutout_const).get(name)
    if name in ENHANCE_OPS and arg == 1.0:
        return images  # factor 1.0 (M = 5) is an exact no-op upstream
    return _op_fns(upstream_contrast)[name](images, arg, u)


def _validate(num_layers, magnitude):
    if num_layers < 0:
        raise ValueError(f"RandAugment num_layers={num_layers} must be >= 0")
    if magnitude < 0:
        raise ValueError(f"RandAugment magnitude={magnitude} must be >= 0")


def distort_batch_with_randaugment(
    images,
    num_layers: int,
    magnitude: float,
    cutout: bool = True,
    seed=None,
    translate_const: float = 100,
    cutout_const: float = 40,
    upstream_contrast: bool = False,
):
    """RandAugment on a batch: every image draws its own `num_layers` ops.

    Args:
        images: uint8 [N, H, W, 3].
        num_layers, magnitude, cutout, translate_const, cutout_const, upstream_contrast: as
            distort_image_with_randaugment.
        seed: [2] int tensor for stateless randomness; None draws one from the global generator.

    Returns:
        uint8 [N, H, W, 3].
    """
    _validate(num_layers, magnitude)
    images = tf.convert_to_tensor(images)
    _check_images(images, rank=4)
    names = OP_NAMES if cutout else OP_NAMES[:-1]
    n = tf.shape(images)[0]
    static_shape = images.shape
    for ops, u in _draws(seed, num_layers, n, len(names)):
        parts = tf.dynamic_partition(images, ops, len(names))
        u_parts = tf.dynamic_partition(u, ops, len(names))
        positions = tf.dynamic_partition(tf.range(n), ops, len(names))
        outs = [
            apply_op(name, part, magnitude, up, translate_const, cutout_const,
                     upstream_contrast)
            for name, part, up in zip(names, parts, u_parts)
        ]
        images = tf.dynamic_stitch(positions, outs)
        images.set_shape(static_shape)
    return images


def _draws(seed, num_layers: int, n, num_ops: int):
    """Per layer, each of the `n` images' op index [n] and uniforms [n, 3] (sign, Cutout
    centre), from `seed` (None: one from the global generator). The batch and the one-image
    functions draw alike, so one image equals image 0 of a batch with the same seed."""
    if seed is None:
        seed = tf.random.uniform([2], maxval=2 ** 31 - 1, dtype=tf.int32)
    seeds = tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), 2 * max(num_layers, 1))
    for layer in range(num_layers):
        ops = tf.random.stateless_uniform([n], seeds[2 * layer], maxval=num_ops, dtype=tf.int32)
        yield ops, tf.random.stateless_uniform([n, 3], seeds[2 * layer + 1])


def distort_image_with_randaugment(
    image,
    num_layers: int,
    magnitude: float,
    cutout: bool = True,
    seed=None,
    translate_const: float = 100,
    cutout_const: float = 40,
    upstream_contrast: bool = False,
):
    """RandAugment on one image: `num_layers` ops drawn uniformly (with repeats), each at
    `magnitude`.

    Args:
        image: uint8 [H, W, 3].
        num_layers: N (randaug_layer), >= 0.
        magnitude: M (randaug_mag), >= 0 on upstream's 0-10 scale; larger values extrapolate.
        cutout: include Cutout in the op list (cutout_op).
        seed: [2] int tensor for stateless randomness; None draws one from the global generator.
        translate_const, cutout_const: pixel scales (upstream: 100 / 40; 32x32 images: S // 8).
        upstream_contrast: reproduce upstream's contrast bug (mean = pixel count / 256).

    Returns:
        uint8 [H, W, 3]; the same as image 0 of distort_batch_with_randaugment with that seed.
    """
    _validate(num_layers, magnitude)
    image = tf.convert_to_tensor(image)
    _check_images(image, rank=3)
    names = OP_NAMES if cutout else OP_NAMES[:-1]
    images = image[None]
    for ops, u in _draws(seed, num_layers, 1, len(names)):
        # only the drawn op runs (a Case op in graphs), on a batch of one
        images = tf.switch_case(ops[0], [
            functools.partial(apply_op, name, images, magnitude, u, translate_const,
                              cutout_const, upstream_contrast) for name in names])
        images.set_shape([1, *image.shape])
    return images[0]
