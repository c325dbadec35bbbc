"""Upstream TF1 checkpoints and keras.applications weight files -> our checkpoints
(noisy_student_tf/interop, tools/convert_checkpoint.py)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from noisy_student_tf import teacher
from noisy_student_tf.config import ModelConfig
from noisy_student_tf.errors import UserInputError
from noisy_student_tf.interop import convert, keras_applications
from noisy_student_tf.interop import upstream_checkpoint as uc
from noisy_student_tf.models import efficientnet

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(width_coefficient=0.1, depth_coefficient=0.1)


def random_shadows(model, model_name, seed):
    rng = np.random.default_rng(seed)
    return {name: rng.standard_normal(var.shape).astype("float32")
            for var, name in uc.upstream_variable_names(model, model_name)}


def weights_by_upstream_name(model, model_name):
    return {name: np.asarray(var) for var, name in uc.upstream_variable_names(model, model_name)}


def test_names_follow_tf1_creation_order():
    # Upstream's TF1 variable names, for b0's block 0 (no expansion) and block 1.
    model = efficientnet.build_model("efficientnet-b0", 10, **TINY)
    names = [n for _, n in uc.upstream_variable_names(model, "efficientnet-b0")]
    bn = "tpu_batch_normalization"
    block0 = [n[len("efficientnet-b0/blocks_0/"):] for n in names if "/blocks_0/" in n]
    assert block0 == [
        "depthwise_conv2d/depthwise_kernel", *(f"{bn}/{v}" for v in
                                               ("gamma", "beta", "moving_mean", "moving_variance")),
        "se/conv2d/kernel", "se/conv2d/bias", "se/conv2d_1/kernel", "se/conv2d_1/bias",
        "conv2d/kernel", *(f"{bn}_1/{v}" for v in
                           ("gamma", "beta", "moving_mean", "moving_variance"))]
    block1 = {n[len("efficientnet-b0/blocks_1/"):].rsplit("/", 1)[0]
              for n in names if "/blocks_1/" in n}
    assert block1 == {"conv2d", bn, "depthwise_conv2d", f"{bn}_1", "se/conv2d", "se/conv2d_1",
                      "conv2d_1", f"{bn}_2"}
    assert names[0] == "efficientnet-b0/stem/conv2d/kernel"
    assert names[-2:] == ["efficientnet-b0/head/dense/kernel", "efficientnet-b0/head/dense/bias"]
    assert len(set(names)) == len(names) == len(model.weights)


@pytest.mark.parametrize("small_image,size", [(False, 224), (True, 32)])
def test_b0_ema_shadows_convert_bit_exact(tmp_path, small_image, size):
    """Acceptance 2: every EMA shadow of an upstream-named b0 checkpoint lands in the model."""
    keras.utils.set_random_seed(1)
    source = efficientnet.build_model("efficientnet-b0", 10, small_image_model=small_image)
    shadows = random_shadows(source, "efficientnet-b0", seed=2)
    raw = weights_by_upstream_name(source, "efficientnet-b0")
    prefix = uc.write_upstream_checkpoint(source, "efficientnet-b0",
                                          str(tmp_path / "up" / "model.ckpt-100"), shadows)
    cfg = ModelConfig("efficientnet-b0", 10, size, small_image)
    info = convert.convert(cfg, prefix, str(tmp_path / "ours"))
    assert info["tensors"] == len(shadows) == 311
    loaded = teacher.load_model(cfg, str(tmp_path / "ours"))
    got = weights_by_upstream_name(loaded, "efficientnet-b0")
    assert set(got) == set(shadows)
    for name, value in shadows.items():
        assert np.array_equal(got[name], value), name  # bit-exact
    saved = json.load(open(tmp_path / "ours" / "run_config.json"))
    assert saved["model"]["small_image_model"] is small_image
    # --use_ema=false takes the raw weights instead.
    convert.convert(cfg, str(tmp_path / "up"), str(tmp_path / "raw"), use_ema=False)
    got = weights_by_upstream_name(teacher.load_model(cfg, str(tmp_path / "raw")),
                                   "efficientnet-b0")
    assert all(np.array_equal(got[n], raw[n]) for n in raw)


def _tiny_checkpoint(tmp_path, drop=(), extra=None, scope="", with_teacher=False):
    model = efficientnet.build_model("efficientnet-b0", 4, **TINY)
    shadows = random_shadows(model, "efficientnet-b0", seed=3)
    prefix = str(tmp_path / "up" / "ckpt")
    uc.write_upstream_checkpoint(model, "efficientnet-b0", prefix, shadows, scope=scope)
    reader = tf.train.load_checkpoint(prefix)
    tensors = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
               if n not in drop}
    if with_teacher:  # an online student's checkpoint holds the teacher too
        for name, value in list(tensors.items()):
            if name != "global_step":
                tensors["teacher_model/" + name] = value + 1.0
                if not name.endswith(uc.EMA_SUFFIX):
                    tensors[name + "/RMSProp"] = value * 0
    tensors.update(extra or {})
    names = sorted(tensors)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=[tf.constant(tensors[n]) for n in names])
    return model, shadows, prefix


TINY_CFG = ModelConfig("efficientnet-b0", 4, 32, width_coefficient=0.1, depth_coefficient=0.1)


def test_student_or_teacher_scope_of_an_online_checkpoint(tmp_path):
    model, shadows, prefix = _tiny_checkpoint(tmp_path, with_teacher=True)
    student = efficientnet.build_model("efficientnet-b0", 4, **TINY)
    report = uc.read_upstream_checkpoint(student, "efficientnet-b0", prefix)
    assert report.scope == "" and report.converted == len(shadows)
    got = weights_by_upstream_name(student, "efficientnet-b0")
    assert all(np.array_equal(got[n], shadows[n]) for n in shadows)
    teacher_model = efficientnet.build_model("efficientnet-b0", 4, **TINY)
    report = uc.read_upstream_checkpoint(teacher_model, "efficientnet-b0", prefix,
                                         scope="teacher")
    assert report.scope == "teacher_model/"
    got = weights_by_upstream_name(teacher_model, "efficientnet-b0")
    assert all(np.array_equal(got[n], shadows[n] + 1.0) for n in shadows)
    # A teacher-only checkpoint is found without --scope.
    _, shadows, prefix = _tiny_checkpoint(tmp_path / "t", scope="teacher_model/")
    report = uc.read_upstream_checkpoint(teacher_model, "efficientnet-b0", prefix)
    assert report.scope == "teacher_model/"


def test_upstream_checkpoint_directly_as_teacher(tmp_path):
    _, shadows, prefix = _tiny_checkpoint(tmp_path)
    got = weights_by_upstream_name(teacher.load_model(TINY_CFG, prefix), "efficientnet-b0")
    assert all(np.array_equal(got[n], shadows[n]) for n in shadows)


MISSING = "efficientnet-b0/blocks_1/se/conv2d_1/bias/ExponentialMovingAverage"


@pytest.mark.parametrize("case,needle", [
    ("missing", f"missing variable {MISSING}"),
    ("unmapped", "map to no layer of efficientnet-b0: efficientnet-b0/blocks_0/extra/kernel"),
    ("stray", "map to no layer of efficientnet-b0: something_else"),
    ("classes", "head/dense/kernel/ExponentialMovingAverage has shape (128, 4), the "
                "efficientnet-b0 built here expects (128, 7)"),
    ("other_model", "no variables under efficientnet-b3/ (a checkpoint of another model? it "
                    "holds: efficientnet-b0)"),
    ("no_ema", "(no EMA shadows? convert the raw weights with --use_ema=false)"),
])
def test_bad_checkpoints_name_the_variable(tmp_path, case, needle):
    drop, extra = (), {}
    cfg = TINY_CFG
    if case == "missing":
        drop = (MISSING,)
    elif case == "unmapped":
        extra = {"efficientnet-b0/blocks_0/extra/kernel": np.zeros(2, np.float32)}
    elif case == "stray":
        extra = {"something_else": np.zeros(2, np.float32)}
    elif case == "classes":
        cfg = ModelConfig("efficientnet-b0", 7, 32, width_coefficient=0.1, depth_coefficient=0.1)
    elif case == "other_model":
        cfg = ModelConfig("efficientnet-b3", 4, 32, width_coefficient=0.1, depth_coefficient=0.1)
    _, shadows, prefix = _tiny_checkpoint(tmp_path, drop=drop, extra=extra)
    if case == "no_ema":
        _tiny_checkpoint(tmp_path, drop=tuple(n + uc.EMA_SUFFIX for n in shadows))
    with pytest.raises(UserInputError) as e:
        convert.convert(cfg, prefix, str(tmp_path / "out"))
    assert needle in str(e.value)
    assert not os.path.exists(tmp_path / "out")  # nothing half-written


def test_keras_applications_weights_file(tmp_path):
    keras.utils.set_random_seed(4)
    source = keras.applications.EfficientNetB0(weights=None, classes=10, input_shape=(64, 64, 3),
                                               classifier_activation=None)
    rng = np.random.default_rng(5)
    for w in source.weights:  # random BN statistics too, so a swapped pair would show
        if "variance" in w.path:
            w.assign(rng.uniform(0.5, 1.5, w.shape).astype("float32"))
        elif w.trainable or "mean" in w.path:
            w.assign(0.1 * rng.standard_normal(w.shape).astype("float32"))
    path = str(tmp_path / "b0.weights.h5")
    source.save_weights(path)
    cfg = ModelConfig("efficientnet-b0", 10, 64)
    model = teacher.load_model(cfg, path)
    table = keras_applications.layer_name_table("efficientnet-b0")
    assert table["blocks_0_dw_bn"] == "block1a_bn" and table["blocks_15_se_expand"] == \
        "block7a_se_expand" and table["blocks_2_project_conv"] == "block2b_project_conv"
    for layer in (lyr for lyr in model.layers if lyr.weights):
        for mine, theirs in zip(layer.weights, source.get_layer(table[layer.name]).weights):
            assert np.array_equal(np.asarray(mine), np.asarray(theirs)), layer.name
    x = rng.uniform(0, 255, (2, 64, 64, 3)).astype("float32")
    # keras.applications rescales by 1/255 inside (its Normalization is the identity here).
    np.testing.assert_allclose(model(x / 255.0, training=False),
                               source(x, training=False), atol=1e-5)
    # Through the converter too, and a wrong file is refused with its name.
    convert.convert(cfg, path, str(tmp_path / "ours"))
    assert os.path.exists(tmp_path / "ours" / "model.ckpt-0.index")
    with pytest.raises(UserInputError, match="b0.weights.h5.*not a keras.applications "
                                             "EfficientNetB1"):
        teacher.load_model(ModelConfig("efficientnet-b1", 10, 64), path)


@pytest.mark.e2e
def test_convert_cli(tmp_path):
    _, shadows, prefix = _tiny_checkpoint(tmp_path)
    tool = os.path.join(ROOT, "tools", "convert_checkpoint.py")
    args = [sys.executable, tool, f"--input_checkpoint={tmp_path / 'up'}",
            "--num_label_classes=4", "--width_coefficient=0.1", "--depth_coefficient=0.1",
            "--small_image_model", f"--output={tmp_path / 'out'}"]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "model.ckpt-0" in proc.stdout
    cfg = json.load(open(tmp_path / "out" / "run_config.json"))["model"]
    assert cfg["image_size"] == 32 and cfg["num_classes"] == 4
    proc = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        f"convert_checkpoint.py: error: --output={str(tmp_path / 'out')!r} exists and is not "
        "empty")
