"""Robustness arithmetic (Hendrycks & Dietterich, 2019), on plain numbers: corruption errors,
mean corruption error (mCE, unnormalised and relative to a reference model), relative mCE, and
flip rates over perturbation sequences (mFR). Errors are fractions in [0, 1]."""

from typing import Dict, Mapping, Optional, Sequence

import numpy as np

Errors = Mapping[str, Mapping[str, float]]  # corruption -> {"1".."5": top-1 error}


def mce(errors: Errors) -> float:
    """Unnormalised mCE: the mean over corruptions of the mean error over severities."""
    if not errors:
        return float("nan")
    return float(np.mean([np.mean(list(by_sev.values())) for by_sev in errors.values()]))


def _common(errors: Errors, reference: Errors):
    names = [n for n in errors if n in reference]
    if not names:
        raise ValueError("no corruption in common with the reference")
    for n in names:
        if set(errors[n]) != set(reference[n]):
            raise ValueError(f"{n}: severities {sorted(errors[n])} vs the reference's "
                             f"{sorted(reference[n])}")
    return names


def corruption_errors_relative(errors: Errors, reference: Errors) -> Dict[str, float]:
    """CE_c = sum_s E_s,c / sum_s E^ref_s,c per corruption (the paper normalises by AlexNet).
    Corruptions the reference never gets wrong (a zero sum) are left out: no ratio exists."""
    out = {}
    for n in _common(errors, reference):
        denom = sum(reference[n].values())
        if denom > 0:
            out[n] = float(sum(errors[n].values()) / denom)
    return out


def _mean(values) -> float:
    return float(np.mean(values)) if len(values) else float("nan")


def mce_relative(errors: Errors, reference: Errors) -> float:
    """mCE relative to a reference model: the mean of CE_c (1.0: as robust as the reference)."""
    return _mean(list(corruption_errors_relative(errors, reference).values()))


def relative_mce(errors: Errors, clean: float, reference: Errors, reference_clean: float
                 ) -> float:
    """Hendrycks' relative mCE: the mean over corruptions of
    sum_s (E_s,c - E_clean) / sum_s (E^ref_s,c - E^ref_clean): how much accuracy the corruption
    costs, against what it costs the reference. Corruptions that cost the reference nothing (a
    sum <= 0) are left out."""
    values = []
    for n in _common(errors, reference):
        den = sum(e - reference_clean for e in reference[n].values())
        if den > 0:
            values.append(sum(e - clean for e in errors[n].values()) / den)
    return _mean(values)


def flip_rate(predictions: np.ndarray, noise: bool) -> float:
    """Flip probability of one perturbation (ImageNet-P): `predictions` [sequences, frames] of
    top-1 classes. Noise sequences compare every frame with the first; the others compare
    consecutive frames. Mean over sequences of the fraction of the m - 1 comparisons that
    differ."""
    p = np.asarray(predictions)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"predictions must be [sequences, frames >= 2], got {p.shape}")
    before = p[:, :1] if noise else p[:, :-1]
    return float(np.mean(p[:, 1:] != before))


def mfr(flip_rates: Mapping[str, float], reference: Optional[Mapping[str, float]] = None
        ) -> float:
    """Mean flip rate over perturbations; with `reference`, the mean of FR_p / FR^ref_p over the
    perturbations that flip the reference at least once."""
    if not flip_rates:
        return float("nan")
    if reference is None:
        return float(np.mean(list(flip_rates.values())))
    names = [n for n in flip_rates if n in reference]
    if not names:
        raise ValueError("no perturbation in common with the reference")
    # perturbations that never flip the reference are left out (no ratio exists)
    return _mean([flip_rates[n] / reference[n] for n in names if reference[n] > 0])


def top1_error(logits_or_classes: np.ndarray, labels: Sequence[int]) -> float:
    """Fraction of wrong top-1 predictions (logits [N, C] or classes [N])."""
    p = np.asarray(logits_or_classes)
    classes = p.argmax(-1) if p.ndim == 2 else p
    labels = np.asarray(labels)
    return float(np.mean(classes != labels)) if len(labels) else float("nan")
