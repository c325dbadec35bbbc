"""Perturbation sequences in the style of ImageNet-P (Hendrycks & Dietterich, 2019), for flip
rates: each turns one image into `frames` images that change a little from one to the next.

ImageNet-P's own sequences are videos made once; these are made on the fly with our parameters
(WORKSPACE.md, "Robustness"), scaled to the image size so a 32x32 and a 224x224 image move alike:
  gaussian_noise  every frame: the image + fresh N(0, 0.04) noise (compared with frame 1)
  motion_blur     frame j: motion blur of radius j pixels (sigma radius/3), one angle
  translate       frame j: shifted by j * S/224 pixels along one random axis and sign
  rotate          frame j: rotated by j * 0.5 degrees (random sign), bilinear, mirrored border
  tilt            frame j: perspective tilt growing by 0.005 per frame (random axis and sign)
  scale           frame j: centre zoom by 1 + 0.01 j, bilinear
  brightness      frame j: HSV value + 0.01 j
Functions map (uint8 [H, W, 3], frames, seed [2]) -> uint8 [frames, H, W, 3].
"""

import math

import tensorflow as tf

from noisy_student_tf.robustness import corruptions

PERTURBATIONS = ("gaussian_noise", "motion_blur", "translate", "rotate", "tilt", "scale",
                 "brightness")
NOISE_PERTURBATIONS = frozenset({"gaussian_noise"})  # flips counted against the first frame


def _warp(image, transforms):
    """Each [8] projective transform of `transforms` [F, 8] applied to the image (bilinear,
    mirrored border) -> uint8 [F, H, W, 3]."""
    n = tf.shape(transforms)[0]
    images = tf.repeat(tf.cast(image, tf.float32)[None], n, axis=0)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transforms, output_shape=tf.shape(image)[:2],
        fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")
    return tf.cast(tf.clip_by_value(tf.round(out), 0.0, 255.0), tf.uint8)


def _sign(seed):
    return tf.where(tf.random.stateless_uniform([], seed) < 0.5, -1.0, 1.0)


def gaussian_noise(image, frames, seed):
    x = tf.cast(image, tf.float32)[None] / 255.0
    noise = tf.random.stateless_normal(tf.concat([[frames], tf.shape(image)], 0), seed,
                                       stddev=0.04)
    return tf.cast(tf.clip_by_value(x + noise, 0.0, 1.0) * 255.0, tf.uint8)


def motion_blur(image, frames, seed):
    angle = tf.random.stateless_uniform([], seed, -45.0, 45.0)
    x = tf.cast(image, tf.float32)
    out = [image]
    for radius in range(1, frames):
        blurred = corruptions.motion_blur_layer(x, radius, max(radius / 3.0, 0.5), angle)
        out.append(tf.cast(tf.clip_by_value(tf.round(blurred), 0.0, 255.0), tf.uint8))
    return tf.stack(out)


def translate(image, frames, seed):
    s1, s2 = corruptions._seeds(seed, 2)
    step = max(1.0, round(image.shape[0] / 224.0))
    j = tf.range(frames, dtype=tf.float32) * step * _sign(s1)
    horizontal = tf.random.stateless_uniform([], s2) < 0.5
    dx, dy = tf.where(horizontal, j, 0.0), tf.where(horizontal, 0.0, j)
    one, zero = tf.ones_like(j), tf.zeros_like(j)
    return _warp(image, tf.stack([one, zero, dx, zero, one, dy, zero, zero], 1))


def rotate(image, frames, seed):
    h, w = float(image.shape[0]), float(image.shape[1])
    a = tf.range(frames, dtype=tf.float32) * (0.5 * math.pi / 180.0) * _sign(seed)
    cos, sin = tf.cos(a), tf.sin(a)
    x_off = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2.0
    y_off = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2.0
    zero = tf.zeros_like(a)
    return _warp(image, tf.stack([cos, -sin, x_off, sin, cos, y_off, zero, zero], 1))


def tilt(image, frames, seed):
    s1, s2 = corruptions._seeds(seed, 2)
    h, w = float(image.shape[0]), float(image.shape[1])
    k = tf.range(frames, dtype=tf.float32) * 0.005 * _sign(s1)
    horizontal = tf.random.stateless_uniform([], s2) < 0.5
    # perspective terms per pixel of the side; the centre row / column stays in place
    c0, c1 = tf.where(horizontal, k / w, 0.0), tf.where(horizontal, 0.0, k / h)
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    # keep the centre fixed: shift so that (cx, cy) maps to itself
    denom = c0 * cx + c1 * cy + 1.0
    one, zero = tf.ones_like(k), tf.zeros_like(k)
    a2 = cx * denom - cx
    b2 = cy * denom - cy
    return _warp(image, tf.stack([one, zero, a2, zero, one, b2, c0, c1], 1))


def scale(image, frames, seed):
    del seed
    h, w = float(image.shape[0]), float(image.shape[1])
    z = 1.0 + 0.01 * tf.range(frames, dtype=tf.float32)
    inv = 1.0 / z  # output pixel -> input pixel
    cx, cy = (w - 1) / 2.0, (h - 1) / 2.0
    zero = tf.zeros_like(z)
    return _warp(image, tf.stack([inv, zero, cx - inv * cx, zero, inv, cy - inv * cy, zero,
                                  zero], 1))


def brightness(image, frames, seed):
    del seed
    hsv = tf.image.rgb_to_hsv(tf.cast(image, tf.float32)[None] / 255.0)
    delta = 0.01 * tf.range(frames, dtype=tf.float32)[:, None, None, None]
    hsv = tf.concat([tf.repeat(hsv[..., :2], frames, 0),
                     tf.clip_by_value(hsv[..., 2:] + delta, 0.0, 1.0)], -1)
    return tf.cast(tf.round(tf.clip_by_value(tf.image.hsv_to_rgb(hsv), 0.0, 1.0) * 255.0),
                   tf.uint8)


FUNCTIONS = {name: globals()[name] for name in PERTURBATIONS}


def sequence(image, name: str, frames: int, seed):
    """The `frames`-image sequence of perturbation `name` for one uint8 [H, W, 3] image."""
    if name not in FUNCTIONS:
        raise ValueError(f"unknown perturbation {name!r}; expected one of "
                         f"{', '.join(PERTURBATIONS)}")
    if frames < 2:
        raise ValueError(f"a perturbation sequence needs at least 2 frames, got {frames}")
    image = tf.convert_to_tensor(image)
    out = FUNCTIONS[name](image, frames, tf.cast(seed, tf.int64))
    return tf.ensure_shape(out, [frames, *image.shape])
