"""RandAugment's geometric ops (rotate, shear, translate) and Cutout, on uint8 batches [N, H, W, 3]
with per-image magnitudes; see data/randaugment.py for the policy."""

import math

import tensorflow as tf

FILL_VALUE = 128  # upstream `replace` for geometric ops and Cutout


def select(mask_images, a, b):
    """Per-image choice a if mask else b, as bit operations (mask: bool [N])."""
    keep = tf.cast(mask_images, tf.uint8)[:, None, None, None] * 255
    return tf.bitwise.bitwise_or(tf.bitwise.bitwise_and(a, keep),
                                 tf.bitwise.bitwise_and(b, tf.bitwise.invert(keep)))


def _warp(images, transforms, fill=FILL_VALUE):
    """Projective warp [N, 8], nearest neighbour, constant fill: upstream's wrap/unwrap trick
    gives the same pixels (its 4th channel is 0 exactly where a sample falls outside).

    Nearest sampling never mixes pixels, so RGB (+ a zero byte) is bitcast to one int32 and warped
    as a single channel: a third of the kernel's per-element work.
    """
    packed = tf.bitcast(tf.pad(images, [[0, 0], [0, 0], [0, 0], [0, 1]]), tf.int32)
    fill_packed = tf.bitcast(tf.constant([fill, fill, fill, 0], tf.uint8), tf.int32)
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=packed[..., None], transforms=tf.cast(transforms, tf.float32),
        output_shape=tf.shape(images)[1:3], fill_value=tf.cast(fill_packed, tf.float32),
        interpolation="NEAREST", fill_mode="CONSTANT",
    )
    return tf.bitcast(out[..., 0], tf.uint8)[..., :3]


def _signed(value, u):
    """Per-image +-value: negated with probability 0.5 (upstream: floor(U + 0.5))."""
    return tf.where(u[:, 0] < 0.5, -value, value)


def rotate(images, degrees, u):
    """Rotation about the centre by +-degrees (tf.contrib.image.rotate), fill 128."""
    radians = _signed(float(degrees) * math.pi / 180.0, u)
    h = tf.cast(tf.shape(images)[1], tf.float32)
    w = tf.cast(tf.shape(images)[2], tf.float32)
    cos, sin = tf.cos(radians), tf.sin(radians)
    x_off = ((w - 1) - (cos * (w - 1) - sin * (h - 1))) / 2.0
    y_off = ((h - 1) - (sin * (w - 1) + cos * (h - 1))) / 2.0
    zero = tf.zeros_like(cos)
    return _warp(images, tf.stack([cos, -sin, x_off, sin, cos, y_off, zero, zero], axis=1))


def shear_x(images, level, u):
    lv = _signed(float(level), u)
    one, zero = tf.ones_like(lv), tf.zeros_like(lv)
    return _warp(images, tf.stack([one, lv, zero, zero, one, zero, zero, zero], axis=1))


def shear_y(images, level, u):
    lv = _signed(float(level), u)
    one, zero = tf.ones_like(lv), tf.zeros_like(lv)
    return _warp(images, tf.stack([one, zero, zero, lv, one, zero, zero, zero], axis=1))


def _round_half_away(x: float) -> int:
    return int(math.copysign(math.floor(abs(x) + 0.5), x))


def _shift(images, s: int, axis: int):
    """out[i] = image[i + s] along `axis` (1: rows, 2: columns), fill 128 outside."""
    size = images.shape[axis]
    if size is not None and abs(s) >= size:
        return tf.fill(tf.shape(images), tf.constant(FILL_VALUE, tf.uint8))
    begin = [0, 0, 0, 0]
    length = [-1, -1, -1, -1]
    begin[axis] = max(s, 0)
    length[axis] = tf.shape(images)[axis] - abs(s)
    kept = tf.slice(images, begin, tf.stack(length))
    pad = [[0, 0]] * 4
    pad[axis] = [max(-s, 0), max(s, 0)]
    return tf.pad(kept, pad, constant_values=FILL_VALUE)


def _translate(images, pixels, u, axis):
    """Upstream translates by -pixels with a nearest-neighbour warp, i.e. samples
    image[i + round(pixels)]; both signs are sliced and each image keeps one."""
    s = _round_half_away(float(pixels))
    if s == 0:
        return images
    return select(u[:, 0] < 0.5, _shift(images, -s, axis), _shift(images, s, axis))


def translate_x(images, pixels, u):
    return _translate(images, pixels, u, axis=2)


def translate_y(images, pixels, u):
    return _translate(images, pixels, u, axis=1)


def cutout(images, pad_size, u, fill=FILL_VALUE):
    """Per image, fill a square of side up to 2 * pad_size centred uniformly (clipped)."""
    shape = tf.shape(images)
    h, w = shape[1], shape[2]
    cy = tf.minimum(tf.cast(u[:, 1] * tf.cast(h, tf.float32), tf.int32), h - 1)[:, None]
    cx = tf.minimum(tf.cast(u[:, 2] * tf.cast(w, tf.float32), tf.int32), w - 1)[:, None]
    pad = int(pad_size)
    rows, cols = tf.range(h)[None, :], tf.range(w)[None, :]
    in_rows = (rows >= cy - pad) & (rows < cy + pad)  # [N, H]
    in_cols = (cols >= cx - pad) & (cols < cx + pad)  # [N, W]
    box = in_rows[:, :, None, None] & in_cols[:, None, :, None]  # [N, H, W, 1], true inside
    return tf.where(box, tf.constant(fill, tf.uint8), images)
