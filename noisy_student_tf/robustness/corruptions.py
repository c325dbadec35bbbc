"""The 15 ImageNet-C corruptions (Hendrycks & Dietterich, 2019) at severities 1-5, as TensorFlow
ops on one image, for any image size of at least 32x32.

Definitions and constants follow the `imagecorruptions` package (corruptions.py, the size-agnostic
version of the ImageNet-C code): same per-severity constants, same formulas and border rules.
Where we differ (WORKSPACE.md, "Robustness"): random draws come from TensorFlow's stateless
generators (same distributions, not the same numbers as numpy's); resampling uses TensorFlow's
kernels (zoom: bilinear with aligned corners, as scipy's order-1 zoom; pixelate: area then
nearest, as PIL's BOX then NEAREST); glass blur's pixel swaps and fog's plasma fractal run in
numpy (tf.numpy_function, seeded from the stateless seed) because they are sequential; frost
blends one of the package's six frost photographs, read from an installed `imagecorruptions`
(`frost_images_dir()`), and is unavailable without it.

Every function maps (uint8 [H, W, 3], severity 1-5, seed [2]) -> uint8 [H, W, 3] (truncated, like
`imagecorruptions.corrupt`), deterministic for a seed.
"""

import functools
import math
import os
from typing import Callable, Dict, Optional

import numpy as np
import tensorflow as tf

NOISE = ("gaussian_noise", "shot_noise", "impulse_noise")
BLUR = ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur")
WEATHER = ("snow", "frost", "fog", "brightness")
DIGITAL = ("contrast", "elastic_transform", "pixelate", "jpeg_compression")
CORRUPTIONS = NOISE + BLUR + WEATHER + DIGITAL  # ImageNet-C's order
SEVERITIES = (1, 2, 3, 4, 5)


# ---------------------------------------------------------------- helpers
def _unit(image):
    return tf.cast(image, tf.float32) / 255.0


def _to_uint8(x255):
    """[0, 255] floats -> uint8, truncated as np.uint8 does after the clip."""
    return tf.cast(tf.clip_by_value(x255, 0.0, 255.0), tf.uint8)


def _seeds(seed, n: int) -> list:
    """n independent seeds from one (a list: unpacking works in graphs too)."""
    return tf.unstack(tf.random.experimental.stateless_split(tf.cast(seed, tf.int64), n), n)


def _pad_axis(x, r: int, axis: int, mode: str):
    """Pads [H, W, C] by r on both sides of `axis`: 'edge' (replicate), 'reflect101' (cv2's
    default: d c b | a b c d), 'symmetric' (scipy's reflect: b a | a b)."""
    if r == 0:
        return x
    if mode == "edge":
        first = tf.gather(x, [0] * r, axis=axis)
        last = tf.gather(x, [x.shape[axis] - 1] * r, axis=axis)
        return tf.concat([first, x, last], axis)
    pads = [[0, 0]] * 3
    pads[axis] = [r, r]
    return tf.pad(x, pads, mode={"reflect101": "REFLECT", "symmetric": "SYMMETRIC"}[mode])


def _correlate(x, kernel: np.ndarray, mode: str):
    """Correlates every channel of [H, W, C] float32 with a 2-D kernel of odd sides (a column
    or a row for separable filters), borders by `mode`; same size out."""
    ry, rx = kernel.shape[0] // 2, kernel.shape[1] // 2
    padded = _pad_axis(_pad_axis(x, ry, 0, mode), rx, 1, mode)
    w = np.tile(kernel[:, :, None, None], [1, 1, x.shape[-1], 1]).astype(np.float32)
    return tf.nn.depthwise_conv2d(padded[None], tf.constant(w), [1, 1, 1, 1], "VALID")[0]


def gaussian_kernel_1d(sigma: float, truncate: float) -> np.ndarray:
    """scipy.ndimage / skimage's Gaussian: radius int(truncate * sigma + 0.5), normalised."""
    radius = int(truncate * float(sigma) + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 * (t / sigma) ** 2)
    return w / w.sum()


def gaussian_filter(x, sigma, truncate: float = 4.0, mode: str = "edge"):
    """skimage.filters.gaussian on [H, W, C] float32, separable (skimage's default border
    'nearest' = edge). `sigma`: one value or (rows, cols)."""
    sy, sx = (sigma, sigma) if np.isscalar(sigma) else sigma
    x = _correlate(x, gaussian_kernel_1d(sy, truncate)[:, None], mode)
    return _correlate(x, gaussian_kernel_1d(sx, truncate)[None, :], mode)


def disk_kernel(radius: float, alias_blur: float) -> np.ndarray:
    """ImageNet-C's anti-aliased disk: a binary disk on a grid of at least 17x17, normalised,
    then blurred by cv2.GaussianBlur (3x3 up to radius 8, else 5x5; reflect-101 borders)."""
    if radius <= 8:
        grid, ksize = np.arange(-8, 9), 3
    else:
        grid, ksize = np.arange(-radius, radius + 1), 5
    xx, yy = np.meshgrid(grid, grid)
    disk = ((xx ** 2 + yy ** 2) <= radius ** 2).astype(np.float64)
    disk /= disk.sum()
    t = np.arange(ksize) - ksize // 2
    g = np.exp(-t ** 2 / (2 * alias_blur ** 2))
    g /= g.sum()
    r = ksize // 2
    padded = np.pad(disk, r, mode="reflect")  # numpy's reflect = cv2's reflect-101
    tmp = sum(g[i] * padded[:, i:i + disk.shape[1]] for i in range(ksize))
    out = sum(g[i] * tmp[i:i + disk.shape[0], :] for i in range(ksize))
    return out.astype(np.float32)


def clipped_zoom(x, zoom: float):
    """Centre crop of ceil(S / zoom), zoomed back by `zoom` (scipy order-1 zoom: output size
    round(crop * zoom), corners aligned), top-left H x W kept."""
    h, w = x.shape[0], x.shape[1]
    ch, cw = int(math.ceil(h / zoom)), int(math.ceil(w / zoom))
    top, left = (h - ch) // 2, (w - cw) // 2
    crop = x[top:top + ch, left:left + cw]
    size = [int(round(ch * zoom)), int(round(cw * zoom))]
    out = tf.compat.v1.image.resize_bilinear(crop[None], size, align_corners=True)[0]
    return out[:h, :w]


def _shift_edge(x, dx, dy):
    """out[y, x] = image[clip(y - dy), clip(x - dx)] (np.roll then replicate the edge)."""
    h, w = tf.shape(x)[0], tf.shape(x)[1]
    rows = tf.clip_by_value(tf.range(h) - dy, 0, h - 1)
    cols = tf.clip_by_value(tf.range(w) - dx, 0, w - 1)
    return tf.gather(tf.gather(x, rows, axis=0), cols, axis=1)


def motion_blur_layer(x, radius: int, sigma: float, angle_deg):
    """The package's motion blur (Wand-free): width 2r + 1 shifted copies along `angle`, weighted
    by a one-sided Gaussian; stops at the first shift that leaves the image (not renormalised)."""
    width = 2 * radius + 1
    k = np.exp(-np.arange(width) ** 2 / (2 * sigma ** 2)) / (np.sqrt(2 * np.pi) * sigma)
    k = (k / k.sum()).astype(np.float32)
    angle = angle_deg * (math.pi / 180.0)
    py, px = width * tf.sin(angle), width * tf.cos(angle)
    hyp = tf.sqrt(py * py + px * px)
    h = tf.cast(tf.shape(x)[0], tf.int32)
    w = tf.cast(tf.shape(x)[1], tf.int32)
    out = tf.zeros_like(x)
    inside = tf.constant(True)
    for i in range(width):
        dy = -tf.cast(tf.math.ceil(i * py / hyp - 0.5), tf.int32)
        dx = -tf.cast(tf.math.ceil(i * px / hyp - 0.5), tf.int32)
        inside = inside & (tf.abs(dy) < h) & (tf.abs(dx) < w)
        out += tf.where(inside, float(k[i]), 0.0) * _shift_edge(x, dx, dy)
    return out


def _bilinear_symmetric(x, yy, xx):
    """map_coordinates(order=1, mode='reflect') of [H, W, C] at float coordinates [H, W]."""
    h, w = x.shape[0], x.shape[1]

    def reflect(i, n):  # scipy 'reflect': ... b a | a b c ... (period 2n)
        i = tf.math.floormod(i, 2 * n)
        return tf.where(i >= n, 2 * n - 1 - i, i)

    y0, x0 = tf.floor(yy), tf.floor(xx)
    fy, fx = (yy - y0)[..., None], (xx - x0)[..., None]
    y0, x0 = tf.cast(y0, tf.int32), tf.cast(x0, tf.int32)
    out = 0.0
    for dy, wy in ((0, 1.0 - fy), (1, fy)):
        for dx, wx in ((0, 1.0 - fx), (1, fx)):
            idx = tf.stack([reflect(y0 + dy, h), reflect(x0 + dx, w)], -1)
            out += wy * wx * tf.gather_nd(x, idx)
    return out


# ---------------------------------------------------------------- noise
def gaussian_noise(image, severity, seed):
    c = [0.08, 0.12, 0.18, 0.26, 0.38][severity - 1]
    x = _unit(image)
    noise = tf.random.stateless_normal(tf.shape(x), seed, stddev=c)
    return _to_uint8(tf.clip_by_value(x + noise, 0.0, 1.0) * 255.0)


def shot_noise(image, severity, seed):
    c = [60, 25, 12, 5, 3][severity - 1]
    x = _unit(image)
    counts = tf.random.stateless_poisson(tf.shape(x), seed, x * c, dtype=tf.float32)
    return _to_uint8(tf.clip_by_value(counts / c, 0.0, 1.0) * 255.0)


def impulse_noise(image, severity, seed):
    """skimage random_noise(mode='s&p', amount=c): each value independently replaced with
    probability c, by 1 or 0 with equal odds."""
    c = [0.03, 0.06, 0.09, 0.17, 0.27][severity - 1]
    x = _unit(image)
    s1, s2 = _seeds(seed, 2)
    flip = tf.random.stateless_uniform(tf.shape(x), s1) <= c
    salt = tf.random.stateless_uniform(tf.shape(x), s2) <= 0.5
    x = tf.where(flip, tf.cast(salt, tf.float32), x)
    return _to_uint8(x * 255.0)


# ---------------------------------------------------------------- blur
def defocus_blur(image, severity, seed):
    del seed
    radius, alias = [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)][severity - 1]
    x = _correlate(_unit(image), disk_kernel(radius, alias), "reflect101")
    return _to_uint8(tf.clip_by_value(x, 0.0, 1.0) * 255.0)


def _glass_shuffle(x: np.ndarray, max_delta: int, iterations: int, seed) -> np.ndarray:
    """ImageNet-C's local "shuffle", as its code behaves: in reverse raster order each pixel
    takes the value of one drawn in [-d, d) around it. (The reference writes a tuple swap of two
    numpy views, which copies one pixel onto the other and leaves the second unchanged; the
    published ImageNet-C images were made that way, so we do the same.) Sequential: later pixels
    see earlier copies."""
    rng = np.random.default_rng(np.asarray(seed, dtype=np.int64) & 0x7FFFFFFF)
    x = x.copy()
    h, w = x.shape[:2]
    cols = list(range(w - max_delta, max_delta, -1))
    for _ in range(iterations):
        for row in range(h - max_delta, max_delta, -1):
            offsets = rng.integers(-max_delta, max_delta, size=(len(cols), 2))
            for (dx, dy), col in zip(offsets, cols):
                x[row, col] = x[row + dy, col + dx]
    return x


def glass_blur(image, severity, seed):
    sigma, delta, iterations = [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2),
                                (1.5, 4, 2)][severity - 1]
    blurred = tf.cast(gaussian_filter(_unit(image), sigma) * 255.0, tf.uint8)
    shuffled = tf.numpy_function(
        lambda a, s: _glass_shuffle(a, delta, iterations, s), [blurred, seed], tf.uint8)
    shuffled = tf.ensure_shape(shuffled, image.shape)
    x = gaussian_filter(tf.cast(shuffled, tf.float32) / 255.0, sigma)
    return _to_uint8(tf.clip_by_value(x, 0.0, 1.0) * 255.0)


def motion_blur(image, severity, seed):
    radius, sigma = [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)][severity - 1]
    angle = tf.random.stateless_uniform([], seed, -45.0, 45.0)
    return _to_uint8(motion_blur_layer(tf.cast(image, tf.float32), radius, sigma, angle))


def zoom_blur(image, severity, seed):
    del seed
    zooms = [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
             np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)][severity - 1]
    x = _unit(image)
    out = tf.zeros_like(x)
    for z in zooms:
        out += clipped_zoom(x, float(z))
    x = (x + out) / (len(zooms) + 1)
    return _to_uint8(tf.clip_by_value(x, 0.0, 1.0) * 255.0)


# ---------------------------------------------------------------- weather
def snow(image, severity, seed):
    c = [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
         (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
         (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)][severity - 1]
    s1, s2 = _seeds(seed, 2)
    x = _unit(image)
    h, w = image.shape[0], image.shape[1]
    layer = tf.random.stateless_normal([h, w, 1], s1, mean=c[0], stddev=c[1])
    layer = clipped_zoom(layer, c[2])
    layer = tf.clip_by_value(tf.where(layer < c[3], 0.0, layer), 0.0, 1.0)
    angle = tf.random.stateless_uniform([], s2, -135.0, -45.0)
    layer = motion_blur_layer(layer, c[4], c[5], angle)
    layer = tf.round(layer * 255.0) / 255.0  # (the package rounds the layer to uint8 steps)
    gray = x[..., 0:1] * 0.299 + x[..., 1:2] * 0.587 + x[..., 2:3] * 0.114  # cv2 RGB2GRAY
    x = c[6] * x + (1 - c[6]) * tf.maximum(x, gray * 1.5 + 0.5)
    x = x + layer + tf.image.rot90(layer, k=2)
    return _to_uint8(tf.clip_by_value(x, 0.0, 1.0) * 255.0)


def frost_images_dir() -> Optional[str]:
    """The frost photographs of an installed `imagecorruptions` package, or None."""
    try:
        import importlib.util

        spec = importlib.util.find_spec("imagecorruptions")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "frost")
    return path if os.path.isdir(path) else None


FROST_FILES = ("frost1.png", "frost2.png", "frost3.png", "frost4.jpg", "frost5.jpg")


@functools.lru_cache(maxsize=None)
def _frost_pictures(directory: str):
    """The frost photographs as RGB uint8 arrays (numpy: usable in any graph)."""
    from PIL import Image

    return [np.asarray(Image.open(os.path.join(directory, f)).convert("RGB"))
            for f in FROST_FILES]


def frost(image, severity, seed):
    """c0 x + c1 frost, a random crop of one of five frost photographs (the package draws from
    the first five of its six) scaled by 1.1x the factor that covers the image (bicubic)."""
    a, b = [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)][severity - 1]
    directory = frost_images_dir()
    if directory is None:
        raise ValueError("frost needs the frost photographs of the imagecorruptions package "
                         "(pip install imagecorruptions --no-deps)")
    h, w = image.shape[0], image.shape[1]
    s1, s2, s3 = _seeds(seed, 3)
    pick = tf.random.stateless_uniform([], s1, 0, len(FROST_FILES), dtype=tf.int32)
    branches = []
    for pic in _frost_pictures(directory):
        fh, fw = int(pic.shape[0]), int(pic.shape[1])
        scale = max(1.0, h / fh, w / fw) if (fh < h or fw < w) else 1.0
        scale *= 1.1
        size = (int(math.ceil(fh * scale)), int(math.ceil(fw * scale)))

        def crop(pic=pic, size=size):
            big = tf.image.resize(tf.constant(pic, tf.float32)[None], size, "bicubic")[0]
            top = tf.random.stateless_uniform([], s2, 0, size[0] - h, dtype=tf.int32)
            left = tf.random.stateless_uniform([], s3, 0, size[1] - w, dtype=tf.int32)
            return tf.clip_by_value(big[top:top + h, left:left + w], 0.0, 255.0)
        branches.append(crop)
    layer = tf.switch_case(pick, branches)
    return _to_uint8(a * tf.cast(image, tf.float32) + b * layer)


def plasma_fractal(mapsize: int, wibbledecay: float, seed) -> np.ndarray:
    """ImageNet-C's diamond-square height map in [0, 1] (numpy; seeded)."""
    rng = np.random.default_rng(np.asarray(seed, dtype=np.int64) & 0x7FFFFFFF)
    m = np.empty((mapsize, mapsize), np.float64)
    m[0, 0] = 0
    step, wibble = mapsize, 100.0

    def wibbled(a):
        return a / 4 + wibble * rng.uniform(-wibble, wibble, a.shape)

    while step >= 2:
        half = step // 2
        corners = m[0:mapsize:step, 0:mapsize:step]
        sq = corners + np.roll(corners, -1, axis=0)
        sq = sq + np.roll(sq, -1, axis=1)
        m[half:mapsize:step, half:mapsize:step] = wibbled(sq)
        dr = m[half:mapsize:step, half:mapsize:step]
        ul = m[0:mapsize:step, 0:mapsize:step]
        m[0:mapsize:step, half:mapsize:step] = wibbled(
            dr + np.roll(dr, 1, axis=0) + ul + np.roll(ul, -1, axis=1))
        m[half:mapsize:step, 0:mapsize:step] = wibbled(
            dr + np.roll(dr, 1, axis=1) + ul + np.roll(ul, -1, axis=0))
        step //= 2
        wibble /= wibbledecay
    m -= m.min()
    return (m / m.max()).astype(np.float32)


def fog(image, severity, seed):
    strength, decay = [(1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)][severity - 1]
    h, w = image.shape[0], image.shape[1]
    size = 1 << (max(h, w) - 1).bit_length()  # next power of 2
    layer = tf.numpy_function(lambda s: plasma_fractal(size, decay, s), [seed], tf.float32)
    layer = tf.ensure_shape(layer, [size, size])[:h, :w, None]
    x = _unit(image)
    top = tf.reduce_max(x)
    x = (x + strength * layer) * top / (top + strength)
    return _to_uint8(tf.clip_by_value(x, 0.0, 1.0) * 255.0)


def brightness(image, severity, seed):
    del seed
    c = [0.1, 0.2, 0.3, 0.4, 0.5][severity - 1]
    hsv = tf.image.rgb_to_hsv(_unit(image))
    hsv = tf.concat([hsv[..., :2], tf.clip_by_value(hsv[..., 2:] + c, 0.0, 1.0)], -1)
    return _to_uint8(tf.clip_by_value(tf.image.hsv_to_rgb(hsv), 0.0, 1.0) * 255.0)


# ---------------------------------------------------------------- digital
def contrast(image, severity, seed):
    del seed
    c = [0.4, 0.3, 0.2, 0.1, 0.05][severity - 1]
    x = _unit(image)
    means = tf.reduce_mean(x, axis=[0, 1], keepdims=True)
    return _to_uint8(tf.clip_by_value((x - means) * c + means, 0.0, 1.0) * 255.0)


def elastic_transform(image, severity, seed):
    """The package's elastic transform: each pixel sampled (bilinear, reflect) at an offset
    drawn uniform in +-0.5% of the height, Gaussian-smoothed (sigma 1% of each side,
    truncate 3, reflect) and scaled by alpha."""
    alpha = [250 * 0.05, 250 * 0.065, 250 * 0.085, 250 * 0.1, 250 * 0.12][severity - 1]
    h, w = image.shape[0], image.shape[1]
    sigma = (h * 0.01, w * 0.01)
    max_d = h * 0.005
    s1, s2 = _seeds(seed, 2)
    fields = []
    for s in (s1, s2):
        u = tf.random.stateless_uniform([h, w, 1], s, -max_d, max_d)
        fields.append(gaussian_filter(u, sigma, truncate=3.0, mode="symmetric")[..., 0] * alpha)
    dx, dy = fields
    yy, xx = tf.meshgrid(tf.range(h, dtype=tf.float32), tf.range(w, dtype=tf.float32),
                         indexing="ij")
    x = _bilinear_symmetric(_unit(image), yy + dy, xx + dx)
    return _to_uint8(tf.clip_by_value(x, 0.0, 1.0) * 255.0)


def pixelate(image, severity, seed):
    del seed
    c = [0.6, 0.5, 0.4, 0.3, 0.25][severity - 1]
    h, w = image.shape[0], image.shape[1]
    small = tf.image.resize(tf.cast(image, tf.float32)[None], [int(h * c), int(w * c)], "area")
    big = tf.image.resize(tf.round(small), [h, w], "nearest")[0]
    return _to_uint8(big)


def jpeg_compression(image, severity, seed):
    del seed
    quality = [25, 18, 15, 10, 7][severity - 1]
    return tf.ensure_shape(tf.io.decode_jpeg(tf.io.encode_jpeg(image, quality=quality),
                                             channels=3), image.shape)


FUNCTIONS: Dict[str, Callable] = {name: globals()[name] for name in CORRUPTIONS}


def corrupt(image, name: str, severity: int, seed):
    """One corruption of one uint8 [H, W, 3] image with a static shape of at least 32x32."""
    if name not in FUNCTIONS:
        raise ValueError(f"unknown corruption {name!r}; expected one of {', '.join(CORRUPTIONS)}")
    if severity not in SEVERITIES:
        raise ValueError(f"severity {severity} is not in 1-5")
    image = tf.convert_to_tensor(image)
    if image.dtype != tf.uint8 or image.shape.rank != 3 or image.shape[-1] != 3 or \
            not image.shape.is_fully_defined():
        raise ValueError(f"corruptions need a uint8 [H, W, 3] image of known size, got "
                         f"{image.dtype.name} {image.shape}")
    if image.shape[0] < 32 or image.shape[1] < 32:
        raise ValueError(f"corruptions need images of at least 32x32, got {image.shape}")
    out = FUNCTIONS[name](image, severity, tf.cast(seed, tf.int64))
    return tf.ensure_shape(out, image.shape)
