"""`main.py --mode=eval_robustness`: top-1 error of a checkpoint on corrupted copies of a labeled
set (ImageNet-C style, made on the fly) and flip rates on perturbation sequences (ImageNet-P
style), with mCE / mFR, against reference models if named.

Outputs in the model_dir (the one writer): robustness.json, TensorBoard scalars under
`robustness/`, robustness.png (error vs severity per corruption, one line per model), and the
table returned by format_table. Progress (images done, rate, ETA) is logged every 10 s.
"""

import dataclasses
import os
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np
import tensorflow as tf
from absl import logging

from noisy_student_tf import io_utils
from noisy_student_tf.robustness import corruptions as corruptions_lib
from noisy_student_tf.robustness import metrics
from noisy_student_tf.robustness import perturbations as perturbations_lib

RESULTS = "robustness.json"
PLOT = "robustness.png"
CACHE_BYTES = 2 << 30  # decoded test images kept in memory up to 2 GiB (else re-read per pass)


@dataclasses.dataclass(frozen=True)
class RobustnessConfig:
    corruptions: Tuple[str, ...] = corruptions_lib.CORRUPTIONS
    severities: Tuple[int, ...] = corruptions_lib.SEVERITIES
    perturbations: Tuple[str, ...] = perturbations_lib.PERTURBATIONS
    frames: int = 10  # frames per perturbation sequence
    subset: str = "test"  # which evaluation split of the labeled data
    max_images: Optional[int] = None  # the first N images only (quick runs)
    seed: int = 0
    batch_size: int = 100
    references: Tuple[str, ...] = ()  # model_dirs to compare with and normalise by
    tfds_sets: Tuple[str, ...] = ()  # prepared tfds robustness sets (robustness/tfds_sets.py)

    def __post_init__(self):
        for name in self.corruptions:
            if name not in corruptions_lib.CORRUPTIONS:
                raise ValueError(f"robustness_corruptions: unknown {name!r}; expected some of "
                                 f"{', '.join(corruptions_lib.CORRUPTIONS)}")
        for s in self.severities:
            if s not in corruptions_lib.SEVERITIES:
                raise ValueError(f"robustness_severities: {s} is not in 1-5")
        for name in self.perturbations:
            if name not in perturbations_lib.PERTURBATIONS:
                raise ValueError(f"robustness_perturbations: unknown {name!r}; expected some "
                                 f"of {', '.join(perturbations_lib.PERTURBATIONS)}")
        if self.perturbations and self.frames < 2:
            raise ValueError(f"robustness_frames={self.frames} must be at least 2")
        if self.max_images is not None and self.max_images < 1:
            raise ValueError(f"robustness_max_images={self.max_images} must be at least 1")

    def settings(self, data: str, image_size: int) -> dict:
        """What decides the numbers (a reference's stored results are reused only if equal)."""
        return {"data": data, "subset": self.subset, "image_size": image_size,
                "max_images": self.max_images, "seed": self.seed,
                "severities": list(self.severities), "frames": self.frames}


class Progress:
    """Images done / total, rate and ETA, logged at most every `every_s` seconds."""

    def __init__(self, total: int, every_s: float = 10.0):
        self.total, self.done, self.every_s = total, 0, every_s
        self.t0 = self.last = time.time()

    def add(self, n: int, what: str) -> None:
        self.done += n
        now = time.time()
        if now - self.last >= self.every_s or self.done >= self.total:
            self.last = now
            rate = self.done / max(now - self.t0, 1e-9)
            eta = (self.total - self.done) / max(rate, 1e-9)
            logging.info("robustness: %d/%d images (%s), %.0f images/s, ETA %dm%02ds",
                         self.done, self.total, what, rate, eta // 60, eta % 60)


def available_corruptions(names) -> Tuple[List[str], Dict[str, str]]:
    """(the corruptions that can run here, {skipped name: why})."""
    skipped = {}
    if "frost" in names and corruptions_lib.frost_images_dir() is None:
        skipped["frost"] = ("needs the frost photographs of the imagecorruptions package "
                            "(pip install imagecorruptions --no-deps)")
    return [n for n in names if n not in skipped], skipped


def evaluate_model(predict: Callable, examples: tf.data.Dataset, num_images: int,
                   rcfg: RobustnessConfig, label: str = "") -> dict:
    """Errors and flip rates of one model. `predict`: uint8 [N, S, S, 3] -> logits [N, C];
    `examples`: (uint8 [S, S, 3], int label) pairs, finite, in a fixed order."""
    names, skipped = available_corruptions(rcfg.corruptions)
    indexed = examples.enumerate()
    total = num_images * (1 + len(names) * len(rcfg.severities)
                          + len(rcfg.perturbations) * rcfg.frames)
    progress = Progress(total)
    prefix = f"{label}: " if label else ""

    def classes_of(ds, what: str):
        out, labels = [], []
        for images, y in ds:
            logits = predict(images)
            out.append(np.argmax(logits.numpy(), -1))
            labels.append(y.numpy())
            progress.add(int(images.shape[0]), prefix + what)
        return np.concatenate(out), np.concatenate(labels)

    def batched(ds):
        return ds.batch(rcfg.batch_size).prefetch(tf.data.AUTOTUNE)

    base_seed = tf.constant([rcfg.seed, 0], tf.int64)
    clean, labels = classes_of(batched(examples), "clean")
    result = {"clean_error": metrics.top1_error(clean, labels), "corruptions": {},
              "perturbations": {}, "skipped": skipped}
    for name in names:
        result["corruptions"][name] = {}
        for s in rcfg.severities:
            seed = tf.random.experimental.stateless_fold_in(
                base_seed, corruptions_lib.CORRUPTIONS.index(name) * 10 + s)

            def corrupt(i, ex, name=name, s=s, seed=seed):
                image, y = ex
                return corruptions_lib.corrupt(
                    image, name, s, tf.random.experimental.stateless_fold_in(seed, i)), y
            ds = indexed.map(corrupt, num_parallel_calls=tf.data.AUTOTUNE)
            pred, y = classes_of(batched(ds), f"{name} {s}")
            result["corruptions"][name][str(s)] = metrics.top1_error(pred, y)
    for name in rcfg.perturbations:
        seed = tf.random.experimental.stateless_fold_in(
            base_seed, 1000 + perturbations_lib.PERTURBATIONS.index(name))

        def frames_of(i, ex, name=name, seed=seed):
            image, y = ex
            return perturbations_lib.sequence(
                image, name, rcfg.frames, tf.random.experimental.stateless_fold_in(seed, i)), y
        seqs = []
        for frames, _ in indexed.map(frames_of, num_parallel_calls=tf.data.AUTOTUNE).batch(
                max(1, rcfg.batch_size // rcfg.frames)).prefetch(tf.data.AUTOTUNE):
            n = int(frames.shape[0])
            flat = tf.reshape(frames, [n * rcfg.frames, *frames.shape[2:]])
            seqs.append(np.argmax(predict(flat).numpy(), -1).reshape(n, rcfg.frames))
            progress.add(n * rcfg.frames, prefix + f"{name} sequences")
        result["perturbations"][name] = metrics.flip_rate(
            np.concatenate(seqs), name in perturbations_lib.NOISE_PERTURBATIONS)
    result["mCE"] = metrics.mce(result["corruptions"])
    result["mFR"] = metrics.mfr(result["perturbations"])
    result["images"] = num_images
    return result


def compare(result: dict, reference: dict) -> dict:
    """This model against a reference's results: mCE and mFR relative to it (1.0: as robust),
    Hendrycks' relative mCE, and the reference's own numbers."""
    out = {"clean_error": reference["clean_error"], "mCE": reference["mCE"],
           "mFR": reference["mFR"]}
    if result["corruptions"] and reference.get("corruptions"):
        out["mCE_relative"] = metrics.mce_relative(result["corruptions"],
                                                   reference["corruptions"])
        out["relative_mCE"] = metrics.relative_mce(
            result["corruptions"], result["clean_error"], reference["corruptions"],
            reference["clean_error"])
    if result["perturbations"] and reference.get("perturbations"):
        out["mFR_relative"] = metrics.mfr(result["perturbations"], reference["perturbations"])
    return out


def stored_results(model_dir: str, settings: dict) -> Optional[dict]:
    """A model_dir's robustness.json when it was made with the same settings."""
    stored = io_utils.read_json(os.path.join(model_dir, RESULTS), default=None)
    if isinstance(stored, dict) and stored.get("settings") == settings:
        return stored
    return None


def format_table(result: dict, name: str, references: Dict[str, dict]) -> str:
    """The printed summary: error per corruption and severity, flip rates, the means."""
    sev = sorted({s for by in result["corruptions"].values() for s in by}, key=int)
    lines = [f"robustness of {name} ({result['images']} images; top-1 error, %)",
             f"{'corruption':<18}" + "".join(f"{'s' + s:>7}" for s in sev) + f"{'mean':>8}"]
    for c, by in result["corruptions"].items():
        lines.append(f"{c:<18}" + "".join(f"{100 * by[s]:>7.1f}" for s in sev)
                     + f"{100 * np.mean(list(by.values())):>8.1f}")
    lines.append(f"{'clean':<18}{100 * result['clean_error']:>7.1f}")
    lines.append(f"{'mCE (unnormalised)':<18}{100 * result['mCE']:>7.1f}")
    for p, fr in result["perturbations"].items():
        lines.append(f"{'flip ' + p:<18}{100 * fr:>7.2f}")
    lines.append(f"{'mFR':<18}{100 * result['mFR']:>7.2f}")
    for ref, cmp in references.items():
        parts = [f"{k} {v:.3f}" for k, v in cmp.items() if k.endswith("relative") or
                 k == "relative_mCE"]
        lines.append(f"vs {ref}: " + ", ".join(parts))
    for c, why in result.get("skipped", {}).items():
        lines.append(f"skipped {c}: {why}")
    for name, r in result.get("tfds", {}).items():
        if "error" in r:
            lines.append(f"tfds {name} ({r['split']}, {r['images']} images): top-1 error "
                         f"{100 * r['error']:.1f}%")
        else:
            lines.append(f"tfds {name}: mCE {100 * r['mCE']:.1f}% over "
                         f"{len(r['corruptions'])} corruptions" +
                         (f" ({len(r['skipped'])} configs not prepared)" if r["skipped"] else ""))
    return "\n".join(lines)


COLOURS = [(31, 119, 180), (214, 39, 40), (44, 160, 44), (148, 103, 189), (255, 127, 14),
           (140, 86, 75)]


def plot(results: Dict[str, dict]) -> np.ndarray:
    """uint8 [H, W, 3]: one panel per corruption, top-1 error (%) vs severity, a line per
    model (the legend at the top)."""
    from PIL import Image, ImageDraw, ImageFont

    names = list(next(iter(results.values()))["corruptions"])
    cols, pw, ph, pad = 5, 150, 110, 22
    rows = max(1, (len(names) + cols - 1) // cols)
    legend = 14 * len(results) + 6
    image = Image.new("RGB", (cols * (pw + pad) + pad, legend + rows * (ph + 2 * pad)),
                      (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for k, model in enumerate(results):
        draw.line([(6, 8 + 14 * k), (26, 8 + 14 * k)], fill=COLOURS[k % len(COLOURS)], width=2)
        draw.text((30, 2 + 14 * k), model[-80:], fill=(0, 0, 0), font=font)
    for i, c in enumerate(names):
        x0 = pad + (i % cols) * (pw + pad)
        y0 = legend + pad + (i // cols) * (ph + 2 * pad)
        draw.rectangle([x0, y0, x0 + pw, y0 + ph], outline=(120, 120, 120))
        draw.text((x0 + 2, y0 - 12), c, fill=(0, 0, 0), font=font)
        draw.text((x0 + 2, y0 + ph + 1), "severity 1-5, error 0-100%", fill=(90, 90, 90),
                  font=font)
        for k, result in enumerate(results.values()):
            by = result["corruptions"].get(c, {})
            points = [(x0 + 8 + (int(s) - 1) * (pw - 16) / 4, y0 + ph - ph * e)
                      for s, e in sorted(by.items(), key=lambda kv: int(kv[0]))]
            if len(points) > 1:
                draw.line(points, fill=COLOURS[k % len(COLOURS)], width=2)
            for px, py in points:
                draw.ellipse([px - 2, py - 2, px + 2, py + 2], fill=COLOURS[k % len(COLOURS)])
    return np.asarray(image)


def _finite(value):
    """NaN (an undefined ratio) -> null: robustness.json stays strict JSON."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def write_outputs(model_dir: str, result: dict, references: Dict[str, dict],
                  reference_results: Dict[str, dict], step: int) -> List[str]:
    """robustness.json (atomic), robustness.png and the TensorBoard scalars."""
    from noisy_student_tf.pseudo import pictures

    path = os.path.join(model_dir, RESULTS)
    io_utils.write_json_atomic(path, _finite({**result, "references": references}))
    models = {model_dir: result, **reference_results}
    png = os.path.join(model_dir, PLOT)
    if result["corruptions"]:
        pictures._png(png, plot(models))
    writer = tf.summary.create_file_writer(os.path.join(model_dir, "robustness"))
    with writer.as_default():
        tf.summary.scalar("robustness/clean_error", result["clean_error"], step=step)
        if result["corruptions"]:
            tf.summary.scalar("robustness/mCE", result["mCE"], step=step)
        if result["perturbations"]:
            tf.summary.scalar("robustness/mFR", result["mFR"], step=step)
        for c, by in result["corruptions"].items():  # a curve over severity (the x axis)
            for s, e in by.items():
                tf.summary.scalar(f"robustness/error_vs_severity/{c}", e, step=int(s))
        for p, fr in result["perturbations"].items():
            tf.summary.scalar(f"robustness/flip_rate/{p}", fr, step=step)
        for ref, cmp in references.items():
            for k, v in cmp.items():
                if "relative" in k:
                    tf.summary.scalar(f"robustness/{k}/{os.path.basename(ref.rstrip('/'))}",
                                      v, step=step)
    writer.close()
    return [path] + ([png] if result["corruptions"] else [])
