"""Robustness evaluation (noisy_student_tf/robustness/): the corruptions and perturbations as
defined, the mCE / mFR arithmetic on hand-made predictions, and --mode=eval_robustness."""

import dataclasses
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from noisy_student_tf.robustness import corruptions as C
from noisy_student_tf.robustness import evaluate as E
from noisy_student_tf.robustness import metrics as M
from noisy_student_tf.robustness import perturbations as P

RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "snow",
          "fog", "elastic_transform", "frost"}
AVAILABLE = [c for c in C.CORRUPTIONS if c != "frost" or C.frost_images_dir()]


def textured_image(size=64, seed=0):
    """A smooth random field with some texture and noise (no period that lines up with the
    pixelate blocks)."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:size, 0:size] / size
    base = np.stack([127 + 90 * np.sin(9 * x + 3 * y), 127 + 90 * np.cos(7 * y),
                     127 + 70 * np.sin(5 * (x - y))], -1)
    field = rng.normal(0, 1, (size // 4 + 2, size // 4 + 2, 3))
    field = tf.image.resize(field[None], [size, size], "bicubic")[0].numpy() * 40
    return np.clip(base * 0.6 + 50 + field + rng.normal(0, 4, base.shape), 0,
                   255).astype(np.uint8)


def detail(image) -> float:
    """Mean absolute Laplacian of the grey image: fine detail a blur removes."""
    x = image.astype(float).mean(-1)
    return np.abs(4 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1] - x[1:-1, :-2]
                  - x[1:-1, 2:]).mean()


def distortion(name, severity, image, seeds=5):
    """How far the corruption takes the image: the mean absolute change, or for glass blur the
    detail it removes. (Glass blur's mean change is not monotone in severity by definition: the
    reference code gives 15.1, 14.7, 23.0, 21.2, 22.4 on this image and ours 15.1, 14.7, 22.7,
    21.2, 22.4, because severity 1 copies pixels twice over a smaller radius; the detail left
    falls at every step, 6.4, 4.3, 3.8, 3.0, 1.5 in the reference.)"""
    outs = [C.corrupt(image, name, severity, [k, 1]).numpy() for k in range(seeds)]
    if name == "glass_blur":
        return detail(image) - np.mean([detail(o) for o in outs])
    return np.mean([np.abs(o.astype(float) - image).mean() for o in outs])


@pytest.mark.e2e  # (5 severities x 5 seeds of every corruption: the CI tier)
@pytest.mark.parametrize("name", AVAILABLE)
def test_each_corruption_grows_with_severity_and_is_seeded(name):
    image = textured_image()
    out = C.corrupt(image, name, 3, [4, 2])
    assert out.dtype == tf.uint8 and out.shape == image.shape
    out = out.numpy()
    assert not np.array_equal(out, image)
    np.testing.assert_array_equal(out, C.corrupt(image, name, 3, [4, 2]).numpy())
    if name in RANDOM:
        assert not np.array_equal(out, C.corrupt(image, name, 3, [5, 2]).numpy())
    d = [distortion(name, s, image) for s in C.SEVERITIES]
    assert all(b > a for a, b in zip(d, d[1:])), (name, d)


@pytest.mark.parametrize("name", ["defocus_blur", "zoom_blur", "motion_blur",
                                  "elastic_transform", "pixelate", "glass_blur"])
def test_spatial_corruptions_keep_a_flat_image_flat(name):
    """Blurs and resamplings average pixels (weights summing to 1, borders replicated or
    mirrored): a constant image stays constant."""
    image = np.full((48, 48, 3), 137, np.uint8)
    out = C.corrupt(image, name, 5, [1, 1]).numpy().astype(int)
    assert np.abs(out - 137).max() <= 1, (name, out.min(), out.max())


def test_noise_corruptions_follow_their_distributions():
    grey = np.full((128, 128, 3), 128, np.uint8)
    for s, c in enumerate([0.08, 0.12, 0.18, 0.26, 0.38], start=1):
        out = C.corrupt(grey, "gaussian_noise", s, [s, 0]).numpy() / 255.0
        inside = out[(out > 0.01) & (out < 0.99)]  # (clipping narrows the tails)
        assert abs(np.std(out - 128 / 255) - c) < 0.12 * c or s == 5
        assert abs(np.mean(inside) - 128 / 255) < 0.02
    for s, c in enumerate([0.03, 0.06, 0.09, 0.17, 0.27], start=1):
        out = C.corrupt(grey, "impulse_noise", s, [s, 0]).numpy()
        assert abs(np.mean(out != 128) - c) < 0.01  # every changed value is 0 or 255
        assert set(np.unique(out)) <= {0, 128, 255}
    out = C.corrupt(grey, "shot_noise", 1, [0, 0]).numpy() / 255.0  # Poisson(60 x) / 60
    assert abs(out.mean() - 128 / 255) < 0.01  # (a mean-preserving noise)
    assert abs(out.std() - np.sqrt(128 / 255 / 60)) < 0.01
    out = C.corrupt(grey, "shot_noise", 5, [0, 0]).numpy() / 255.0  # c = 3: counts / 3
    assert set(np.round(np.unique(out) * 3, 3)) <= {0.0, 1.0, 2.0, 3.0}


def test_exact_formulas():
    image = textured_image(32)
    x = image / 255.0
    for s, c in enumerate([0.4, 0.3, 0.2, 0.1, 0.05], start=1):  # contrast: towards the mean
        want = np.clip((x - x.mean(axis=(0, 1))) * c + x.mean(axis=(0, 1)), 0, 1) * 255
        got = C.corrupt(image, "contrast", s, [0, 0]).numpy().astype(float)
        assert np.abs(got - want).max() <= 1.0
    got = C.corrupt(image, "pixelate", 5, [0, 0]).numpy()  # 0.25: 8x8 blocks of 4x4 means
    blocks = image.reshape(8, 4, 8, 4, 3).astype(float).mean(axis=(1, 3))
    np.testing.assert_allclose(got[::4, ::4], np.round(blocks), atol=1)
    assert (got.reshape(8, 4, 8, 4, 3) == got[::4, ::4][:, None, :, None]).all()
    k = C.disk_kernel(3, 0.1)
    assert k.shape == (17, 17) and abs(k.sum() - 1) < 1e-5 and k[8, 8] == k.max()
    assert k[8, 8 + 4] < 1e-3 < k[8, 8 + 3]  # the disk ends at radius 3
    bright = C.corrupt(image, "brightness", 2, [0, 0]).numpy()
    v = lambda a: a.max(axis=-1) / 255.0  # noqa: E731 (HSV value)
    np.testing.assert_allclose(v(bright), np.minimum(v(image) + 0.2, 1.0), atol=1 / 255 + 1e-6)


def test_frost_uses_the_package_pictures(tmp_path, monkeypatch):
    """frost reads imagecorruptions/frost/*: a stand-in package with flat pictures gives
    c0 x + c1 value exactly."""
    pkg = tmp_path / "imagecorruptions"
    (pkg / "frost").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    from PIL import Image

    for f in C.FROST_FILES:
        Image.fromarray(np.full((40, 50, 3), 100, np.uint8)).save(pkg / "frost" / f)
    monkeypatch.syspath_prepend(str(tmp_path))
    C._frost_pictures.cache_clear()
    try:
        image = textured_image(32)
        out = C.corrupt(image, "frost", 2, [3, 3]).numpy().astype(float)  # 0.8 x + 0.6 * 100
        np.testing.assert_allclose(out, np.floor(np.clip(0.8 * image + 60, 0, 255)), atol=1)
    finally:
        C._frost_pictures.cache_clear()


def test_bad_corruption_calls():
    with pytest.raises(ValueError, match="unknown corruption"):
        C.corrupt(textured_image(32), "rain", 1, [0, 0])
    with pytest.raises(ValueError, match="1-5"):
        C.corrupt(textured_image(32), "contrast", 6, [0, 0])
    with pytest.raises(ValueError, match="at least 32x32"):
        C.corrupt(np.zeros((16, 16, 3), np.uint8), "contrast", 1, [0, 0])


@pytest.mark.parametrize("name", P.PERTURBATIONS)
def test_perturbation_sequences_drift_step_by_step(name):
    image = textured_image(48)
    frames = P.sequence(image, name, 6, [2, 9]).numpy()
    assert frames.shape == (6, 48, 48, 3) and frames.dtype == np.uint8
    np.testing.assert_array_equal(frames, P.sequence(image, name, 6, [2, 9]).numpy())
    d = [np.abs(f.astype(float) - image).mean() for f in frames]
    if name in P.NOISE_PERTURBATIONS:  # every frame: the image with fresh noise
        assert min(d) > 3 and not np.array_equal(frames[1], frames[2])
    else:  # the first frame is the image, then each frame moves further
        assert d[0] < 0.5 and all(b > a for a, b in zip(d, d[1:])), (name, d)


def test_mce_and_mfr_arithmetic_by_hand():
    errors = {"a": {"1": 0.2, "2": 0.4}, "b": {"1": 0.1, "2": 0.3}}
    ref = {"a": {"1": 0.4, "2": 0.4}, "b": {"1": 0.2, "2": 0.2}}
    assert M.mce(errors) == pytest.approx((0.3 + 0.2) / 2)
    assert M.corruption_errors_relative(errors, ref) == pytest.approx({"a": 0.75, "b": 1.0})
    assert M.mce_relative(errors, ref) == pytest.approx(0.875)
    # relative mCE: (sum (E - clean)) / (sum (E_ref - clean_ref)) per corruption
    assert M.relative_mce(errors, 0.1, ref, 0.1) == pytest.approx(
        ((0.1 + 0.3) / (0.3 + 0.3) + (0.0 + 0.2) / (0.1 + 0.1)) / 2)
    preds = np.array([[1, 1, 2, 2], [0, 1, 0, 1]])  # 2 sequences of 4 frames
    assert M.flip_rate(preds, noise=False) == pytest.approx((1 / 3 + 3 / 3) / 2)
    assert M.flip_rate(preds, noise=True) == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert M.mfr({"x": 0.2, "y": 0.1}) == pytest.approx(0.15)
    assert M.mfr({"x": 0.2, "y": 0.1}, {"x": 0.4, "y": 0.1}) == pytest.approx(0.75)
    assert M.top1_error(np.array([[0.1, 0.9], [0.8, 0.2]]), [1, 1]) == 0.5
    with pytest.raises(ValueError, match="severities"):
        M.mce_relative({"a": {"1": 0.1}}, {"a": {"2": 0.1}})
    # a corruption (perturbation) the reference is never hurt (flipped) by has no ratio: left out
    assert M.mce_relative(errors, {**ref, "b": {"1": 0.0, "2": 0.0}}) == pytest.approx(0.75)
    assert M.relative_mce(errors, 0.1, {**ref, "b": {"1": 0.1, "2": 0.1}}, 0.1) == \
        pytest.approx((0.1 + 0.3) / (0.3 + 0.3))
    assert M.mfr({"x": 0.2, "y": 0.1}, {"x": 0.4, "y": 0.0}) == pytest.approx(0.5)


def _tiny_model_dir(tmp_path):
    """A few steps of a tiny 32x32 model on flat-colour images (no download, in-process)."""
    from noisy_student_tf import distribute, locks
    from noisy_student_tf.config import DataConfig
    from noisy_student_tf.train import run
    from tests.helpers import tiny_config, write_dataset

    data = tmp_path / "data"
    data.mkdir()
    write_dataset(data, {"train": 16, "test": 12}, size=(32, 32), num_classes=10)
    cfg = tiny_config(str(tmp_path / "m"), train_steps=2)
    cfg = dataclasses.replace(
        cfg, model=dataclasses.replace(cfg.model, image_size=32, num_classes=10),
        data=DataConfig(task_name="custom", label_data_dir=str(data), num_train_images=16,
                        mean_rgb=(127.0,) * 3, stddev_rgb=(60.0,) * 3,
                        eval_images={"test": 12}, tfds_data_dir=str(tmp_path / "tfds")))
    run.train_and_evaluate(cfg, distribute.get_strategy("default"), evaluate=False)
    locks.release_all()  # (main.py releases its model_dir lock at exit; here we go on)
    return cfg


@pytest.mark.e2e
def test_eval_robustness_writes_results_and_compares_with_a_reference(tmp_path):
    from noisy_student_tf import locks
    from noisy_student_tf.train import run

    cfg = _tiny_model_dir(tmp_path)
    ref = str(tmp_path / "ref")
    shutil.copytree(cfg.train.model_dir, ref)  # the same weights: relative numbers are 1
    rcfg = E.RobustnessConfig(corruptions=("gaussian_noise", "contrast"), severities=(1, 3),
                              perturbations=("translate", "gaussian_noise"), frames=3,
                              max_images=10, batch_size=8)
    ref_cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, model_dir=ref))
    run.evaluate_robustness(ref_cfg, rcfg)
    locks.release_all()
    stored = json.load(open(os.path.join(ref, E.RESULTS)))
    # a stand-in cifar10_corrupted (tfds' registered builder reads it): two of its configs
    from tests.helpers import fake_registered

    for config in ("gaussian_noise_1", "gaussian_noise_3"):
        fake_registered(tmp_path / "tfds", "cifar10_corrupted", "1.0.0", {"test": 6},
                        config=config)
    table, paths = run.evaluate_robustness(cfg, dataclasses.replace(
        rcfg, references=(ref,), tfds_sets=("cifar10_corrupted",)))
    out = json.load(open(os.path.join(cfg.train.model_dir, E.RESULTS)))
    assert {"clean_error", "mCE", "mFR", "corruptions", "perturbations"} <= set(out)
    assert set(out["corruptions"]) == {"gaussian_noise", "contrast"}
    assert set(out["corruptions"]["contrast"]) == {"1", "3"}
    assert out["corruptions"] == stored["corruptions"]  # same weights, same seeds: same numbers
    assert out["images"] == 10 and 0 <= out["mCE"] <= 1 and 0 <= out["mFR"] <= 1
    assert out["references"][ref]["mCE_relative"] == pytest.approx(1.0)
    assert "mCE (unnormalised)" in table and "flip translate" in table
    tfds_out = out["tfds"]["cifar10_corrupted"]
    assert set(tfds_out["corruptions"]) == {"gaussian_noise"}  # contrast_*: not prepared
    assert set(tfds_out["corruptions"]["gaussian_noise"]) == {"1", "3"}
    assert tfds_out["skipped"] == ["contrast_1", "contrast_3"]
    assert "tfds cifar10_corrupted: mCE" in table
    assert os.path.exists(os.path.join(cfg.train.model_dir, E.PLOT)) and len(paths) == 2
    events = os.listdir(os.path.join(cfg.train.model_dir, "robustness"))
    assert events and events[0].startswith("events.out.tfevents")
    locks.release_all()


def test_eval_robustness_flags(fv, digits_dir, tmp_path):
    from flags.config import main_job_from_flags
    from noisy_student_tf.errors import UserInputError

    base = ["main.py", "--task_name=digits", f"--label_data_dir={digits_dir}",
            "--mode=eval_robustness"]
    fv([*base, f"--model_dir={tmp_path}", "--robustness_corruptions=contrast,fog",
        "--robustness_severities=1,5", "--robustness_perturbations=", "--seed=3"])
    job = main_job_from_flags(fv)
    assert job.robustness.corruptions == ("contrast", "fog")
    assert job.robustness.severities == (1, 5) and job.robustness.perturbations == ()
    assert job.robustness.seed == 3
    for bad, match in [("--robustness_corruptions=rain", "unknown 'rain'"),
                       ("--robustness_severities=0", "0 is not in 1-5"),
                       ("--robustness_severities=x", "'x' is not a severity")]:
        fv.unparse_flags()
        fv([*base, f"--model_dir={tmp_path}", bad])
        with pytest.raises(UserInputError, match=match):
            main_job_from_flags(fv)
