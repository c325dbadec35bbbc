"""Run as a script by test_distribute.py: MirroredStrategy on 2 logical CPUs vs one device, or
(--multi_worker, one process per worker with TF_CONFIG) MultiWorkerMirroredStrategy vs one device.

Both replicas get the same 4 images, and the single device gets those 4 twice (batch 8), so
per-replica BN statistics equal the single-device ones and the loss curves must agree.
Prints JSON {"mirrored": [...], "single": [...]} (multi-worker: {"multi_worker": [...],
"single": [...] (the chief only), "results": eval results or {}, "worker": i}).
"""

import dataclasses
import json
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

MULTI_WORKER = "--multi_worker" in sys.argv
if not MULTI_WORKER:
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from noisy_student_tf import distribute  # noqa: E402
from noisy_student_tf.config import (DataConfig, ModelConfig, RunConfig,  # noqa: E402
                                     StudentConfig, TrainConfig)
from noisy_student_tf.train.loop import Trainer  # noqa: E402

STEPS = 4


WITH_TEACHER = "--teacher" in sys.argv
JIT = "--jit" in sys.argv  # XLA for each replica's forward/backward
TEACHER_PATH = None  # set below for --teacher


def config(teacher_path=None):
    cfg = RunConfig(
        model=ModelConfig(num_classes=3, image_size=16, small_image_model=True, dropout_rate=0.0,
                          stochastic_depth_rate=0.0, width_coefficient=0.1,
                          depth_coefficient=0.1),
        data=DataConfig(num_train_images=40, mean_rgb=(127.0,) * 3, stddev_rgb=(60.0,) * 3),
        train=TrainConfig(train_steps=100, train_batch_size=8, base_learning_rate=0.5,
                          jit_compile=JIT),
    )
    if teacher_path:
        st = StudentConfig(unlabel_ratio=1.0, unlabel_data_dir="unused", teacher_softmax_temp=1.0,
                           teacher=cfg.model, teacher_model_path=teacher_path)
        cfg = dataclasses.replace(cfg, student=st)
    return cfg


def batches(n):
    rng = np.random.RandomState(0)
    out = []
    for _ in range(STEPS):
        b = {"image": rng.randint(0, 255, (n, 16, 16, 3)).astype(np.uint8),
             "label": rng.randint(0, 3, n).astype(np.int32)}
        if WITH_TEACHER:  # as many unlabeled images as labeled (unlabel_ratio 1)
            b["unl_image"] = rng.randint(0, 255, (n, 16, 16, 3)).astype(np.uint8)
            b["unl_teacher_image"] = rng.randint(0, 255, (n, 16, 16, 3)).astype(np.uint8)
            b["unl_label"] = np.zeros(n, np.int32)
            b["unl_probs"] = np.full((n, 3), 1 / 3, np.float32)
        out.append(b)
    return out


def curve(strategy, per_replica, repeat):
    trainer = Trainer(config(TEACHER_PATH), strategy)
    trainer.model.set_weights(init_weights)
    n = strategy.num_replicas_in_sync
    # One input pipeline feeds replicas round-robin: element i goes to replica i % n, so each
    # batch is listed n times for the mirrored run and doubled along the batch for one device.
    data = [{k: np.concatenate([v] * repeat) for k, v in b.items()}
            for b in batches(per_replica) for _ in range(n)]

    def dataset_fn(ctx):
        return tf.data.Dataset.from_tensor_slices(
            {k: np.stack([b[k] for b in data]) for k in data[0]}).repeat()

    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
    loop = trainer.make_train_loop()
    return [float(loop(iterator, tf.constant(1))[0]["train/loss"]) for _ in range(STEPS)]


def predict_check():
    """--predict: the prediction tool's outputs under MirroredStrategy (2 replicas, a partial
    last batch) vs one device, in input order."""
    from noisy_student_tf.models import efficientnet
    from noisy_student_tf.pseudo import predict as predict_lib
    from tests import pseudo_data

    root = tempfile.mkdtemp()
    pseudo_data.write_raw_shards(os.path.join(root, "unl"), 1, [11], encode=pseudo_data.png_bytes)
    out = {}
    for name, strategy in (("mirrored", distribute.get_strategy(
            "mirrored", devices=["/cpu:0", "/cpu:1"])), ("single", tf.distribute.get_strategy())):
        with strategy.scope():
            keras_utils_seed()
            model = efficientnet.build_model("efficientnet-b0", 3, width_coefficient=0.1,
                                             depth_coefficient=0.1, small_image_model=True)
        cfg = predict_lib.PredictConfig(
            label_data_dir=os.path.join(root, "unl"), output_dir=os.path.join(root, name),
            info_dir=os.path.join(root, name, "info"), image_size=16, small_image=True,
            num_classes=3, mean_rgb=(127.0,) * 3, stddev_rgb=(60.0,) * 3, file_prefix="extra",
            num_shards=1, batch_size=4)
        (path,) = predict_lib.run_prediction(model, cfg, strategy)
        out[name] = [list(f["probabilities"].float_list.value)
                     for f in pseudo_data.read_records(path)]
    print(json.dumps(out))


def keras_utils_seed():
    import keras

    keras.utils.set_random_seed(0)


def multi_worker_check(model_dir: str) -> None:
    """One worker of a 2-worker cluster (TF_CONFIG): 4 steps whose losses are compared with one
    device, then `trainer.train` on to step 6 with checkpoints, TensorBoard and an evaluation
    into the shared `model_dir`, where only the chief may write."""
    import keras

    strategy = distribute.get_strategy("auto")  # first: the cluster starts before other ops
    assert distribute.is_multi_worker(strategy), type(strategy)
    keras.utils.set_random_seed(0)  # the same initial weights in every process
    init = Trainer(config(), tf.distribute.get_strategy()).model.get_weights()
    cfg = config()
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(
        cfg.train, model_dir=model_dir, train_steps=STEPS + 2, iterations_per_loop=2,
        save_checkpoints_steps=2))
    trainer = Trainer(cfg, strategy)
    trainer.model.set_weights(init)

    def dataset_fn(ctx):  # every worker's one replica gets the same batches
        data = batches(4)
        return tf.data.Dataset.from_tensor_slices(
            {k: np.stack([b[k] for b in data]) for k in data[0]}).repeat()

    iterator = iter(strategy.distribute_datasets_from_function(dataset_fn))
    loop = trainer.make_train_loop()
    losses = [float(loop(iterator, tf.constant(1))[0]["train/loss"]) for _ in range(STEPS)]
    trainer.train(dataset_fn)
    dev = tf.data.Dataset.from_tensor_slices(
        {k: v for k, v in batches(10)[0].items() if k in ("image", "label")}).batch(4)
    results = trainer.evaluate({"dev": dev})
    out = {"multi_worker": losses, "results": results, "step": trainer.global_step,
           "worker": int(json.loads(os.environ["TF_CONFIG"])["task"]["index"])}
    if distribute.is_chief():
        global init_weights
        init_weights = init
        out["single"] = curve(tf.distribute.get_strategy(), 4, 2)
    print(json.dumps(out))


if "--predict" in sys.argv:
    predict_check()
    sys.exit(0)
if MULTI_WORKER:
    multi_worker_check(sys.argv[sys.argv.index("--multi_worker") + 1])
    sys.exit(0)

if WITH_TEACHER:  # a briefly trained teacher checkpoint, loaded by both runs
    TEACHER_PATH = tempfile.mkdtemp()
    source = Trainer(dataclasses.replace(config(), train=dataclasses.replace(
        config().train, model_dir=TEACHER_PATH, train_steps=2, iterations_per_loop=2,
        save_checkpoints_steps=2)), tf.distribute.get_strategy())
    source.train(lambda ctx: tf.data.Dataset.from_tensors(
        {k: v for k, v in batches(8)[0].items() if k in ("image", "label")}).repeat())
init_weights = Trainer(config(TEACHER_PATH), tf.distribute.get_strategy()).model.get_weights()
mirrored = distribute.get_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
assert mirrored.num_replicas_in_sync == 2
result = {"mirrored": curve(mirrored, 4, 1), "single": curve(tf.distribute.get_strategy(), 4, 2)}
print(json.dumps(result))
