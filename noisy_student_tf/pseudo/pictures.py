"""Pictures of a filter run's pseudo-labels, for a person to look at.

Per class, a contact sheet of the kept images (top row: the most confident, bottom row: the least
confident that still passed the class threshold, each with its confidence), and one bar chart of
the images per class before balancing (confident enough: at or above the class threshold, from
`threshold.json`) and after it (records written, copies counted, from `stats/final_stats.json`).
Written as PNG files and as TensorBoard images (`pseudo_labels/...`) into one directory.

The kept records are streamed once; only `per_class` images per class and end are held.
"""

import hashlib
import heapq
import io
import os
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from noisy_student_tf import io_utils
from noisy_student_tf.data import framing, records
from noisy_student_tf.errors import UserInputError

CELL = 64  # pixels per image on a contact sheet
TEXT_H = 12  # a line of PIL's default bitmap font


def _font():
    from PIL import ImageFont  # local: only pictures need PIL

    return ImageFont.load_default()


def collect(files: Sequence[str], num_classes: int, per_class: int
            ) -> Dict[int, Tuple[list, list]]:
    """{class: (most confident [(prob, encoded)], least confident [(prob, encoded)])} over the
    records of `files`, each distinct image once (upsampled copies are one image)."""
    top: Dict[int, list] = {c: [] for c in range(num_classes)}
    bottom: Dict[int, list] = {c: [] for c in range(num_classes)}
    seen = set()
    spec = {records.IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
            "label": tf.io.FixedLenFeature([], tf.int64),
            "prob": tf.io.FixedLenFeature([], tf.float32)}
    ds = framing.dataset(list(files)).batch(256).map(lambda s: tf.io.parse_example(s, spec))
    for batch in ds.as_numpy_iterator():
        for encoded, label, prob in zip(batch[records.IMAGE_KEY], batch["label"], batch["prob"]):
            key = hashlib.sha1(encoded).digest()
            if key in seen or not 0 <= label < num_classes:
                continue
            seen.add(key)
            entry = (float(prob), key, encoded)
            heapq.heappush(top[int(label)], entry)
            if len(top[int(label)]) > per_class:
                heapq.heappop(top[int(label)])
            heapq.heappush(bottom[int(label)], (-entry[0], key, encoded))
            if len(bottom[int(label)]) > per_class:
                heapq.heappop(bottom[int(label)])
    return {c: (sorted(((p, e) for p, _, e in top[c]), key=lambda x: -x[0]),
                sorted(((-p, e) for p, _, e in bottom[c]), key=lambda x: x[0]))
            for c in range(num_classes)}


def _thumb(encoded: bytes):
    from PIL import Image

    image = tf.io.decode_image(encoded, channels=3, expand_animations=False).numpy()
    pil = Image.fromarray(image)
    scale = CELL / max(pil.size)
    size = (max(1, round(pil.size[0] * scale)), max(1, round(pil.size[1] * scale)))
    small = max(pil.size) < CELL  # pixel art stays crisp when enlarged
    return pil.resize(size, Image.NEAREST if small else Image.BILINEAR)


def contact_sheet(title: str, most: list, least: list) -> np.ndarray:
    """uint8 [H, W, 3]: a title line, then a row of `most` and a row of `least` (prob, encoded)
    with each confidence under its image."""
    from PIL import Image, ImageDraw

    cols = max(len(most), len(least), 1)
    row_h = CELL + TEXT_H + 4
    sheet = Image.new("RGB", (max(cols * (CELL + 4), 240), TEXT_H + 6 + 2 * (row_h + TEXT_H)),
                      (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    font = _font()
    draw.text((2, 2), title, fill=(0, 0, 0), font=font)
    y = TEXT_H + 6
    for label, row in (("most confident", most), ("least confident kept", least)):
        draw.text((2, y), label, fill=(90, 90, 90), font=font)
        y += TEXT_H
        for i, (prob, encoded) in enumerate(row):
            x = i * (CELL + 4)
            sheet.paste(_thumb(encoded), (x, y))
            draw.text((x, y + CELL + 1), f"{prob:.3f}", fill=(0, 0, 0), font=font)
        y += row_h
    return np.asarray(sheet)


def bar_chart(names: List[str], before: List[int], after: List[int]) -> np.ndarray:
    """uint8 [H, W, 3]: per class, a grey bar (before balancing) and a blue one (after)."""
    from PIL import Image, ImageDraw

    n = len(names)
    bar_w, gap, plot_h, left = 10, 8, 160, 50
    width = left + n * (2 * bar_w + gap) + 10
    image = Image.new("RGB", (max(width, 260), plot_h + 4 * TEXT_H + 10), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = _font()
    top = max(max(before + after), 1)
    base = plot_h + TEXT_H + 4
    draw.text((2, 2), "images per class: before (grey) / after (blue) balancing", fill=(0, 0, 0),
              font=font)
    draw.text((2, TEXT_H + 4), str(top), fill=(0, 0, 0), font=font)
    draw.text((2, base - TEXT_H), "0", fill=(0, 0, 0), font=font)
    draw.line([(left - 2, TEXT_H + 4), (left - 2, base)], fill=(0, 0, 0))
    for i, (b, a) in enumerate(zip(before, after)):
        x = left + i * (2 * bar_w + gap)
        for j, (value, colour) in enumerate(((b, (150, 150, 150)), (a, (40, 90, 200)))):
            h = int(round(plot_h * value / top))
            draw.rectangle([x + j * bar_w, base - h, x + (j + 1) * bar_w - 1, base],
                           fill=colour)
        draw.text((x, base + 2 + (i % 2) * TEXT_H), names[i][:6], fill=(0, 0, 0), font=font)
    return np.asarray(image)


def counts(filter_dir: str, num_classes: int) -> Tuple[List[int], List[int]]:
    """(before balancing, after) per class from a filter output directory."""
    threshold = os.path.join(filter_dir, "threshold.json")
    final = os.path.join(filter_dir, "stats", "final_stats.json")
    for path in (threshold, final):
        if not tf.io.gfile.exists(path):
            raise UserInputError(f"{path} is missing: run both filter passes on every shard "
                                 "first (tools/filter_unlabel.py)")
    chosen = io_utils.read_json(threshold)
    after = io_utils.read_json(final).get("cat_count", {})
    return ([int(chosen.get(str(c), [0, 0])[1]) for c in range(num_classes)],
            [int(after.get(str(c), 0)) for c in range(num_classes)])


def _png(path: str, image: np.ndarray) -> None:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    tmp = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "wb") as f:
        f.write(buf.getvalue())
    tf.io.gfile.rename(tmp, path, overwrite=True)


def write(filter_dir: str, output_dir: str, num_classes: int,
          class_names: Optional[List[str]] = None, per_class: int = 8) -> List[str]:
    """Writes class_<c>.png per class with kept images, counts.png, and the same images to
    TensorBoard in `output_dir`. Returns the PNG paths."""
    names = list(class_names or [str(c) for c in range(num_classes)])
    if len(names) != num_classes:
        raise UserInputError(f"{len(names)} class names for {num_classes} classes")
    data = os.path.join(filter_dir, "data")
    files = (io_utils.match_files(data, "train-*") if tf.io.gfile.isdir(data) else [])
    files = [f for f in files if ".tmp" not in os.path.basename(f)]
    if not files:
        raise UserInputError(f"{data} holds no filtered records (train-*): run the filter "
                             "first (tools/filter_unlabel.py)")
    before, after = counts(filter_dir, num_classes)
    kept = collect(files, num_classes, per_class)
    tf.io.gfile.makedirs(output_dir)
    paths = []
    writer = tf.summary.create_file_writer(output_dir)
    with writer.as_default(step=0):
        chart = bar_chart(names, before, after)
        paths.append(os.path.join(output_dir, "counts.png"))
        _png(paths[-1], chart)
        tf.summary.image("pseudo_labels/counts", chart[None])
        for c in range(num_classes):
            most, least = kept[c]
            if not most:
                continue
            title = f"class {c} ({names[c]}): {before[c]} kept, {after[c]} after balancing"
            sheet = contact_sheet(title, most, least)
            paths.append(os.path.join(output_dir, f"class_{c:04d}.png"))
            _png(paths[-1], sheet)
            tf.summary.image(f"pseudo_labels/class_{c:04d}", sheet[None])
    writer.close()
    logging.info("pseudo-label pictures: %d PNG files in %s", len(paths), output_dir)
    return paths
