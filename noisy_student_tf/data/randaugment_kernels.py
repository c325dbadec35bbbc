"""The data-movement half of RandAugment's ops, with two executors that give the same bytes.

Every costly op is split in two: a small float32 part in plain TensorFlow ops with upstream's
exact arithmetic (a 256-entry table per image and channel, a 256 x 256 blend table, the source
pixel of each output pixel, a box), and an integer part that applies it to the pixels (table
lookups, pixel gathers, a fill). The integer part is where the time goes, and TensorFlow's CPU
kernels do it slowly (tf.gather: ~4 ns per element; a broadcasting tf.where: ~6 ns), so it runs as
small XLA programs on one image [H, W, 3] at a time (one compilation per image size), mapped over
the batch. Integer lookups and moves are exact under XLA, so the bytes do not depend on the
executor; float arithmetic never runs under XLA here (its fused multiply-adds would change
upstream's rounding).

`USE_XLA = False` selects the plain TensorFlow executor, which the tests hold equal to the XLA
one. It is also used for images of unknown height / width, and for small images (under 48 x 48:
there the per-image calls cost what they save; at 32x32 batches of 64 ran at ~48,000 images/s
plain against ~32,000 with XLA, one image at a time ~8,500 against ~8,000, while from 64x64 up
XLA is faster both ways).
"""

import tensorflow as tf

FILL_VALUE = 128  # upstream `replace` for geometric ops and Cutout
USE_XLA = True
SMALL_PIXELS = 48 * 48


def use_xla(images) -> bool:
    """XLA executor for images [N, H, W, 3] of static height and width, not small."""
    h, w = images.shape[1], images.shape[2]
    return USE_XLA and h is not None and w is not None and h * w >= SMALL_PIXELS


def _per_image(kernel, images, *args):
    """kernel(image [H, W, 3], *per-image args) over the batch; one image: a direct call."""
    if images.shape[0] == 1:
        return kernel(images[0], *[a[0] for a in args])[None]
    return tf.map_fn(lambda xs: kernel(*xs), (images, *args),
                     fn_output_signature=tf.TensorSpec(images.shape[1:], tf.uint8))


# ------------------------------------------------------------------ XLA programs, one image
@tf.function(jit_compile=True, autograph=False)
def _lookup_one(image, table):
    """table [3, 256]: out[..., c] = table[c, image[..., c]]."""
    index = tf.cast(image, tf.int32) + tf.constant([0, 256, 512])
    return tf.gather(tf.reshape(table, [768]), index)


@tf.function(jit_compile=True, autograph=False)
def _pair_lookup_one(image, first, table):
    """table [65536]: out = table[first * 256 + image] (first broadcasts over channels)."""
    return tf.gather(table, tf.cast(first, tf.int32) * 256 + tf.cast(image, tf.int32))


@tf.function(jit_compile=True, autograph=False)
def _inner_pair_lookup_one(image, inner, table):
    """As _pair_lookup_one with first = image whose interior is replaced by inner [H-2, W-2, 3]."""
    h, w = image.shape[0], image.shape[1]
    rows = tf.range(h)[:, None, None]
    cols = tf.range(w)[None, :, None]
    border = (rows == 0) | (rows == h - 1) | (cols == 0) | (cols == w - 1)
    first = tf.where(border, image, tf.pad(inner, [[1, 1], [1, 1], [0, 0]]))
    return tf.gather(table, tf.cast(first, tf.int32) * 256 + tf.cast(image, tf.int32))


@tf.function(jit_compile=True, autograph=False)
def _move_one(image, source):
    """source [H * W]: out pixel i = image pixel source[i], or the fill where it is H * W."""
    h, w = image.shape[0], image.shape[1]
    pixels = tf.concat([tf.reshape(image, [h * w, 3]),
                        tf.fill([1, 3], tf.constant(FILL_VALUE, tf.uint8))], axis=0)
    return tf.reshape(tf.gather(pixels, source), [h, w, 3])


@tf.function(jit_compile=True, autograph=False)
def _box_one(image, box):
    """box [4] = top, bottom, left, right (end-exclusive): filled inside."""
    rows = tf.range(image.shape[0])[:, None, None]
    cols = tf.range(image.shape[1])[None, :, None]
    inside = (rows >= box[0]) & (rows < box[1]) & (cols >= box[2]) & (cols < box[3])
    return tf.where(inside, tf.constant(FILL_VALUE, tf.uint8), image)


# ------------------------------------------------------------------ the ops' entry points
def lookup(images, tables):
    """Per image and channel table lookup: images [N, H, W, 3] uint8, tables [N, 3, 256]
    uint8 -> out[n, y, x, c] = tables[n, c, images[n, y, x, c]]."""
    if use_xla(images):
        return _per_image(_lookup_one, images, tables)
    out = tf.gather(tf.reshape(tables, [-1]), table_index(images))
    return tf.reshape(out, tf.shape(images))


def table_index(images):
    """int32 [N, H, W * 3]: image * 768 + channel * 256 + value, each pixel's entry in tables
    [N, 3, 256] flattened (the offsets vary along a row only: no per-pixel broadcast)."""
    shape = tf.shape(images)
    n, h, w = shape[0], shape[1], shape[2]
    offsets = tf.range(n)[:, None, None] * 768 + tf.tile(tf.constant([0, 256, 512]), [w])
    return tf.cast(tf.reshape(images, [n, h, w * 3]), tf.int32) + offsets


def pair_lookup(images, first, table):
    """out = table[first * 256 + images] for uint8 images [N, H, W, 3], first [N, H, W, 1 or 3],
    table [65536] uint8 (the same for every image)."""
    if use_xla(images):
        return _per_image(lambda im, f: _pair_lookup_one(im, f, table), images, first)
    return tf.gather(table, tf.cast(first, tf.int32) * 256 + tf.cast(images, tf.int32))


def inner_pair_lookup(images, inner, table):
    """pair_lookup with first = images whose interior [1:-1, 1:-1] is replaced by inner
    [N, H - 2, W - 2, 3] (the border keeps the image's own pixels)."""
    if use_xla(images):
        return _per_image(lambda im, f: _inner_pair_lookup_one(im, f, table), images, inner)
    middle = tf.concat([images[:, 1:-1, :1], inner, images[:, 1:-1, -1:]], axis=2)
    first = tf.concat([images[:, :1], middle, images[:, -1:]], axis=1)
    return pair_lookup(images, first, table)


def move_pixels(images, sources, which):
    """Nearest-neighbour resampling by index: sources int32 [k, H * W] (H * W: the fill value),
    which int32 [N] picks each image's row of sources."""
    index = tf.gather(sources, which)  # [N, H * W]
    if use_xla(images):
        return _per_image(_move_one, images, index)
    shape = tf.shape(images)
    fill = tf.fill([shape[0], 1, 3], tf.constant(FILL_VALUE, tf.uint8))
    pixels = tf.concat([tf.reshape(images, [shape[0], -1, 3]), fill], axis=1)
    return tf.reshape(tf.gather(pixels, index, batch_dims=1), shape)


def fill_boxes(images, boxes):
    """boxes int32 [N, 4] = top, bottom, left, right (end-exclusive), filled with 128."""
    if use_xla(images):
        return _per_image(_box_one, images, boxes)
    shape = tf.shape(images)
    n, h, w = shape[0], shape[1], shape[2]
    rows, cols = tf.range(h)[None, :], tf.range(w * 3)[None, :] // 3
    in_rows = (rows >= boxes[:, 0:1]) & (rows < boxes[:, 1:2])  # [N, H]
    in_cols = (cols >= boxes[:, 2:3]) & (cols < boxes[:, 3:4])  # [N, W * 3]
    # the box is an outer product, so no full-size condition is broadcast (uint8 arithmetic)
    box = tf.cast(in_rows, tf.uint8)[:, :, None] * tf.cast(in_cols, tf.uint8)[:, None, :]
    flat = tf.reshape(images, [n, h, w * 3])
    return tf.reshape(flat * (1 - box) + box * tf.constant(FILL_VALUE, tf.uint8), shape)
