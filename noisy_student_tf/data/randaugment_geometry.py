"""RandAugment's geometric ops (rotate, shear, translate) and Cutout, on uint8 batches [N, H, W, 3]
with per-image signs; see data/randaugment.py for the policy.

A geometric op at magnitude M has only two transforms (+M and -M). For a static image size, each
output pixel's source pixel under both is computed once per (op, size, magnitude) in NumPy,
following ImageProjectiveTransformV3's float32 arithmetic and rounding step by step, and kept as a
constant; the op itself is then a pixel gather (randaugment_kernels.move_pixels). Images of unknown
size go through the ImageProjectiveTransformV3 kernel itself.
"""

import functools
import math

import numpy as np
import tensorflow as tf

from noisy_student_tf.data import randaugment_kernels as kernels
from noisy_student_tf.data.randaugment_kernels import FILL_VALUE


def _round_half_away(v):
    """std::round on float32 arrays, exactly (v - floor(v) is exact in float32)."""
    low = np.floor(v)
    frac = v - low
    up = np.where(v >= 0, frac >= 0.5, frac > 0.5)
    return (low + up).astype(np.int64)


@functools.lru_cache(maxsize=64)
def source_pixels(transforms: tuple, height: int, width: int) -> np.ndarray:
    """For each 8-float transform (output -> input coordinates), the flat source pixel
    (y * width + x) of every output pixel under nearest-neighbour sampling, or height * width
    where the source falls outside the image (the fill value). int32 [len(transforms), H * W].

    Follows tensorflow/core/kernels/image/image_ops.h (ProjectiveGenerator, FILL_CONSTANT,
    NEAREST) in float32: x' = (t0 x + t1 y + t2) / (t6 x + t7 y + 1), rounded half away from
    zero; a zero denominator gives the fill value.
    """
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    out = []
    for t in transforms:
        t = np.asarray(t, np.float32)
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            proj = t[6] * xs + t[7] * ys + np.float32(1)
            in_x = (t[0] * xs + t[1] * ys + t[2]) / proj
            in_y = (t[3] * xs + t[4] * ys + t[5]) / proj
        valid = (proj != 0) & np.isfinite(in_x) & np.isfinite(in_y)
        # far outside stays far outside after clipping (and cannot wrap in the int conversion)
        col = _round_half_away(np.clip(np.where(valid, in_x, -1), -2.0 ** 30, 2.0 ** 30))
        row = _round_half_away(np.clip(np.where(valid, in_y, -1), -2.0 ** 30, 2.0 ** 30))
        inside = valid & (col >= 0) & (col < width) & (row >= 0) & (row < height)
        out.append(np.where(inside, row * width + col, height * width))
    return np.stack(out).reshape(len(transforms), height * width).astype(np.int32)


def _kernel_warp(images, transforms):
    """ImageProjectiveTransformV3 itself (nearest, constant fill): upstream's wrap/unwrap trick
    gives the same pixels (its 4th channel is 0 exactly where a sample falls outside)."""
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=tf.cast(transforms, tf.float32),
        output_shape=tf.shape(images)[1:3], fill_value=float(FILL_VALUE),
        interpolation="NEAREST", fill_mode="CONSTANT")


def _warp_signed(images, transforms_fn, value: float, u):
    """Warp each image by transforms_fn(+value) or transforms_fn(-value), the sign drawn from
    u[:, 0] (negative with probability 0.5: upstream's floor(U + 0.5)).

    transforms_fn(values [k], h, w) builds the [k, 8] matrices with TF ops in float32, so the
    gather path uses exactly the numbers the kernel path would pass."""
    negative = u[:, 0] < 0.5
    h, w = images.shape[1], images.shape[2]
    if h is None or w is None:
        shape = tf.shape(images)
        signed = tf.where(negative, -value, value)
        return _kernel_warp(images, transforms_fn(signed, tf.cast(shape[1], tf.float32),
                                                  tf.cast(shape[2], tf.float32)))
    with tf.init_scope():  # at trace time: the two matrices, evaluated eagerly
        pair = transforms_fn(tf.constant([value, -value], tf.float32),
                             tf.constant(float(h)), tf.constant(float(w))).numpy()
    sources = source_pixels(tuple(map(tuple, pair.tolist())), h, w)
    return kernels.move_pixels(images, tf.constant(sources), tf.cast(negative, tf.int32))


def _rotations(radians, h, w):
    """tf.contrib.image.rotate's output -> input matrices about the image centre, [k, 8]."""
    cos, sin = tf.cos(radians), tf.sin(radians)
    x_off = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2.0
    y_off = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2.0
    zero = tf.zeros_like(cos)
    return tf.stack([cos, -sin, x_off, sin, cos, y_off, zero, zero], axis=1)


def _affine(levels, position: int):
    """Identity matrices [k, 8] with `levels` at `position` (1: shear x, 3: shear y,
    2: translate x, 5: translate y)."""
    rows = [tf.zeros_like(levels)] * 8
    rows[0] = rows[4] = tf.ones_like(levels)
    rows[position] = levels
    return tf.stack(rows, axis=1)


def rotate(images, degrees, u):
    """Rotation about the centre by +-degrees (tf.contrib.image.rotate), fill 128."""
    return _warp_signed(images, _rotations, float(degrees) * math.pi / 180.0, u)


def shear_x(images, level, u):
    """out(x, y) = in(x +- level * y, y)."""
    return _warp_signed(images, lambda v, h, w: _affine(v, 1), float(level), u)


def shear_y(images, level, u):
    """out(x, y) = in(x, y +- level * x)."""
    return _warp_signed(images, lambda v, h, w: _affine(v, 3), float(level), u)


def translate_x(images, pixels, u):
    """Upstream translates by -pixels with a nearest-neighbour warp: out(x) = in(x +- pixels)."""
    return _warp_signed(images, lambda v, h, w: _affine(v, 2), float(pixels), u)


def translate_y(images, pixels, u):
    return _warp_signed(images, lambda v, h, w: _affine(v, 5), float(pixels), u)


def cutout(images, pad_size, u):
    """Per image, fill a square of side up to 2 * pad_size centred uniformly (clipped)."""
    shape = tf.shape(images)
    h, w = shape[1], shape[2]
    cy = tf.minimum(tf.cast(u[:, 1] * tf.cast(h, tf.float32), tf.int32), h - 1)
    cx = tf.minimum(tf.cast(u[:, 2] * tf.cast(w, tf.float32), tf.int32), w - 1)
    pad = int(pad_size)
    return kernels.fill_boxes(images, tf.stack([cy - pad, cy + pad, cx - pad, cx + pad], 1))
