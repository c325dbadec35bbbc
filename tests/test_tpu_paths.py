"""What a TPU needs, checked without one: TPUStrategy compiles the whole replica step with XLA, so
it must hold no host-side op and see static shapes; the input must drop remainders; bfloat16
keeps float32 logits (tests/test_trainer.py). What cannot be checked here is in WORKSPACE.md."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from noisy_student_tf import distribute
from noisy_student_tf.config import StudentConfig
from noisy_student_tf.data import pipeline, records
from noisy_student_tf.errors import UserInputError
from noisy_student_tf.train.loop import Trainer
from tests.helpers import dataset_fn, tiny_config, tiny_model


def _online_config(tmp_path):
    """A tiny Noisy Student run with an online teacher (its own frozen copy of the model)."""
    teacher_dir = str(tmp_path / "teacher")
    trainer = Trainer(tiny_config(teacher_dir, train_steps=2), tf.distribute.get_strategy())
    trainer.train(lambda ctx: dataset_fn())
    cfg = tiny_config(str(tmp_path / "student"))
    return dataclasses.replace(cfg, student=StudentConfig(
        unlabel_ratio=1.0, teacher=cfg.model, teacher_model_path=teacher_dir,
        unlabel_data_dir="unused", teacher_softmax_temp=1.0))


def _student_batch():
    batch = next(iter(dataset_fn()))
    return {**batch, "unl_image": batch["image"], "unl_teacher_image": batch["image"],
            "unl_label": tf.fill([4], -1), "unl_probs": tf.zeros([4, 3])}


@pytest.mark.e2e  # (XLA compiles of whole steps: 15-30 s each, so in the CI tier)
@pytest.mark.parametrize("kind", [  # the online-teacher step: opt-in (--runslow), CI time
    "supervised", pytest.param("online_teacher", marks=pytest.mark.optin)])
def test_whole_replica_step_compiles_with_xla(tmp_path, kind):
    """The replica function TPUStrategy would compile (forward, backward, optimizer update, EMA)
    compiles as one XLA program on this CPU: no host-side op, no dynamic shape."""
    keras.utils.set_random_seed(0)
    if kind == "supervised":
        cfg, batch = tiny_config(str(tmp_path / "m")), next(iter(dataset_fn()))
    else:
        cfg, batch = _online_config(tmp_path), _student_batch()
    trainer = Trainer(cfg, tf.distribute.get_strategy())
    before = [v.numpy().copy() for v in trainer.model.trainable_variables]
    step = tf.function(trainer._train_step, jit_compile=True)
    for _ in range(2):  # (the warm-up learning rate is 0 at step 0)
        metrics = step(batch)
    assert np.isfinite(float(metrics["train/loss"]))
    assert int(trainer.optimizer.iterations) == 2
    after = trainer.model.trainable_variables
    assert any(not np.array_equal(b, a.numpy()) for b, a in zip(before, after))
    ops = {op.type for op in step.get_concrete_function(batch).graph.get_operations()}
    assert not ops & {"PyFunc", "EagerPyFunc", "PyFuncStateless"}


def test_training_batches_have_static_shapes(tmp_path):
    """drop_remainder everywhere a training batch is made: every dimension known."""
    examples = [records.labeled_example(tf.io.encode_png(
        np.full((20, 20, 3), i, np.uint8)).numpy(), i % 3 + 1) for i in range(12)]
    files = records.write_shards(str(tmp_path), "train", examples, 2)
    cfg = pipeline.InputConfig(image_size=16, num_classes=3, small_image=True)
    labeled = pipeline.labeled_train_dataset(files, cfg, 4)
    unlabeled = pipeline.unlabeled_train_dataset(files, cfg, 6, teacher_size=24)
    for ds in (labeled, unlabeled, pipeline.zip_labeled_unlabeled(labeled, unlabeled)):
        for name, spec in ds.element_spec.items():
            assert spec.shape.is_fully_defined(), (name, spec.shape)


def test_tpu_strategy_without_a_tpu_is_one_line():
    # (a TPU name is looked up through the Cloud metadata server, which is not here; a grpc://
    # address of nothing makes TensorFlow wait for ever, which we cannot shorten)
    with pytest.raises(UserInputError, match="--tpu='no-such-tpu': no TPU reachable"):
        distribute.get_strategy("tpu", tpu="no-such-tpu")


@pytest.mark.e2e  # (an XLA compile)
def test_bfloat16_model_keeps_static_shapes_and_float32_outputs():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = tiny_model()
        out = tf.function(lambda x: model(x, training=True), jit_compile=True)(
            tf.zeros([2, 16, 16, 3]))
        assert out.dtype == tf.float32 and out.shape == (2, 3)
    finally:
        keras.mixed_precision.set_global_policy("float32")
