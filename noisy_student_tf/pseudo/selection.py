"""The filter tool's selection math (upstream filter_unlabel.py)
as plain numpy over arrays, so that it streams and is unit-tested on its own.

Confidence of an image = its probability of its argmax class. Statistics are per-class
histograms over upstream's 101 thresholds t_k = k / 100: bin k counts t_k <= prob < t_{k+1}, the
last bin prob >= 1.00. Memory is O(classes x 101), whatever the number of records.
"""

import numpy as np

THRESHOLDS = np.array([k / 100.0 for k in range(101)])  # upstream's prob_threshold
NUM_BINS = len(THRESHOLDS)


def bin_index(prob) -> np.ndarray:
    """Upstream's bin of each confidence: the largest k with prob >= k / 100 (compared in
    float64, as upstream compared Python floats). Confidences below 0 are an error."""
    p = np.asarray(prob, np.float64)
    idx = np.searchsorted(THRESHOLDS, p, side="right") - 1
    if idx.size and idx.min() < 0:
        raise ValueError(f"confidence {p[idx < 0][0]} is negative")
    return idx


class Histogram:
    """Per-class confidence histogram: counts int64 [C, 101]."""

    def __init__(self, num_classes: int):
        self.counts = np.zeros((num_classes, NUM_BINS), np.int64)

    @property
    def num_classes(self) -> int:
        return self.counts.shape[0]

    def add(self, classes, prob) -> None:
        classes = np.asarray(classes, np.int64)
        flat = classes * NUM_BINS + bin_index(prob)
        self.counts += np.bincount(flat, minlength=self.counts.size).reshape(self.counts.shape)

    def to_json(self) -> dict:
        """Upstream's prelim_stats format: {class: [[threshold, count], ... 101 pairs]}, classes
        without any image left out."""
        return {str(c): [[float(t), int(n)] for t, n in zip(THRESHOLDS, row)]
                for c, row in enumerate(self.counts) if row.sum() > 0}

    @classmethod
    def from_json(cls, obj: dict, num_classes: int) -> "Histogram":
        h = cls(num_classes)
        for key, pairs in obj.items():
            c = int(key)
            if not 0 <= c < num_classes or len(pairs) != NUM_BINS:
                raise ValueError(f"class {key!r} with {len(pairs)} bins does not fit "
                                 f"{num_classes} classes x {NUM_BINS} bins")
            h.counts[c] = [int(n) for _, n in pairs]
        return h

    def merge(self, other: "Histogram") -> None:
        self.counts += other.counts


def cumulative_from_top(counts: np.ndarray) -> np.ndarray:
    """[C, 101]: number of images with prob >= t_k (upstream's total_counts_sum)."""
    return np.cumsum(counts[:, ::-1], axis=1)[:, ::-1]


def check_min_threshold(min_threshold: float) -> None:
    """Upstream only stops at min_threshold when it equals a grid value exactly."""
    if not 0.0 <= min_threshold <= 1.0 or not np.any(THRESHOLDS == min_threshold):
        raise ValueError(f"min_threshold={min_threshold} must be one of 0.00, 0.01, ..., 1.00")


def choose_thresholds(counts: np.ndarray, num_image: int, min_threshold: float = 0.0,
                      max_prob: float = 2.0, use_top: bool = True, use_all: bool = False):
    """Per-class (threshold, total_image) as upstream's master job picks them.

    Walking thresholds from 1.00 down, over t < max_prob and t >= min_threshold, total_image
    accumulates the images with prob >= t (and in bins below max_prob); with use_top (and not
    use_all) the first t where total_image >= num_image is taken, otherwise min_threshold.
    Returns float64 [C] thresholds and int64 [C] totals.
    """
    check_min_threshold(min_threshold)
    num_classes = counts.shape[0]
    thresholds = np.full(num_classes, min_threshold)
    totals = np.zeros(num_classes, np.int64)
    allowed = (THRESHOLDS < max_prob) & (THRESHOLDS >= min_threshold)
    for c in range(num_classes):
        total = 0
        for k in range(NUM_BINS - 1, -1, -1):
            if not allowed[k]:
                continue
            total += int(counts[c, k])
            if not use_all and use_top and total >= num_image:
                thresholds[c] = THRESHOLDS[k]
                break
            if THRESHOLDS[k] == min_threshold:
                thresholds[c] = THRESHOLDS[k]
                break
        totals[c] = total
    return thresholds, totals


def copies_per_image(labels, prob, thresholds, totals, num_image: int, rng: np.random.Generator,
                     max_prob: float = 2.0, use_all: bool = False, upsample: bool = True):
    """Number of copies of each image in the output (0 = dropped), upstream section 9.2.

    Kept when thresholds[label] <= prob <= max_prob; then c = 1 with use_all, else
    num_image / totals[label] (capped at 1 without upsample), rounded at random:
    floor(c) + [u < c - floor(c)]. One uniform draw per image, so the result depends only on
    `rng` and the order of the images.
    """
    labels = np.asarray(labels, np.int64)
    p = np.asarray(prob, np.float64)
    u = rng.random(labels.shape[0])
    keep = (p >= thresholds[labels]) & (p <= max_prob)
    if use_all:
        c = np.ones(labels.shape[0])
    else:
        tot = totals[labels].astype(np.float64)
        c = np.divide(float(num_image), tot, out=np.zeros_like(tot), where=tot > 0)
        if not upsample:
            c = np.minimum(c, 1.0)
    whole = np.floor(c)
    copies = whole.astype(np.int64) + (u < c - whole)
    return np.where(keep, copies, 0)
