"""Ready-made robustness sets from tensorflow-datasets, when the user has them prepared:
`imagenet2012_corrupted` and `cifar10_corrupted` (one builder config per corruption and
severity: top-1 error per config and their mCE) and plain test sets such as `imagenet_a`,
`imagenet_r` and `imagenet_v2` (top-1 error). ImageNet-A and -R hold 200 of the 1,000 classes:
as in their papers, predictions are limited to the classes that occur in the split.

Nothing is downloaded: a config that is not prepared in --tfds_data_dir is reported as skipped.
"""

from typing import Callable, Dict, Optional

import numpy as np

from noisy_student_tf.data import pipeline, tfds_source
from noisy_student_tf.errors import UserInputError
from noisy_student_tf.robustness import metrics

# our corruption name -> the dataset's config name, where they differ
CORRUPTED = {
    "imagenet2012_corrupted": {},
    "cifar10_corrupted": {"glass_blur": "frosted_glass_blur", "elastic_transform": "elastic"},
}
SUBSET_CLASSES = frozenset({"imagenet_a", "imagenet_r"})  # 200-class subsets of ImageNet


def _split_of(name: str, data_dir: Optional[str]) -> str:
    builder = tfds_source.load_builder(name, data_dir, "robustness_tfds")
    splits = list(builder.info.splits)
    for preferred in ("test", "validation"):
        if preferred in splits:
            return preferred
    return splits[0]


def _errors_on(source, in_cfg, predict: Callable, num_classes: int, max_images, batch: int,
               restrict: bool) -> float:
    if source.num_classes is not None and source.num_classes != num_classes:
        raise UserInputError(f"--robustness_tfds={source.name}: {source.num_classes} classes, "
                             f"the model has {num_classes}")
    ds = pipeline.eval_examples(source, in_cfg)
    if max_images:
        ds = ds.take(max_images)
    logits, labels = [], []
    for b in ds.batch(batch):
        logits.append(predict(b["image"]).numpy())
        labels.append(b["label"].numpy())
    logits, labels = np.concatenate(logits), np.concatenate(labels)
    if restrict:  # only the classes of the split can be predicted
        mask = np.full(logits.shape[-1], -np.inf)
        mask[np.unique(labels)] = 0.0
        logits = logits + mask
    return metrics.top1_error(logits, labels)


def evaluate(names, data_dir: Optional[str], in_cfg, predict: Callable, num_classes: int,
             corruptions, severities, max_images=None, batch: int = 100) -> Dict[str, dict]:
    """{dataset: {"corruptions": {c: {s: error}}, "mCE", "skipped"} or {"error", "split",
    "images"}} for each named tfds set."""
    out = {}
    for name in names:
        if name in CORRUPTED:
            errors, skipped = {}, []
            for c in corruptions:
                config = CORRUPTED[name].get(c, c)
                for s in severities:
                    full = f"{name}/{config}_{s}"
                    try:
                        source = tfds_source.resolve(full, _split_of(full, data_dir), data_dir,
                                                     "robustness_tfds")
                    except UserInputError:
                        skipped.append(f"{config}_{s}")
                        continue
                    errors.setdefault(c, {})[str(s)] = _errors_on(
                        source, in_cfg, predict, num_classes, max_images, batch, False)
            if not errors:
                raise UserInputError(f"--robustness_tfds={name}: none of its configs is "
                                     f"prepared in --tfds_data_dir={data_dir!r}")
            full_sets = {c: e for c, e in errors.items() if len(e) == len(severities)}
            out[name] = {"corruptions": errors, "mCE": metrics.mce(full_sets),
                         "skipped": skipped}
        else:
            split = _split_of(name, data_dir)
            source = tfds_source.resolve(name, split, data_dir, "robustness_tfds")
            out[name] = {"error": _errors_on(source, in_cfg, predict, num_classes, max_images,
                                             batch, name in SUBSET_CLASSES),
                         "split": split,
                         "images": min(source.num_examples, max_images or source.num_examples)}
    return out
