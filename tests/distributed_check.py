"""Run as a script by test_distribute.py: MirroredStrategy on 2 logical CPUs vs one device.

Both replicas get the same 4 images, and the single device gets those 4 twice (batch 8), so
per-replica BN statistics equal the single-device ones and the loss curves must agree.
Prints JSON {"mirrored": [...], "single": [...]}.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from noisy_student_tf import distribute  # noqa: E402
from noisy_student_tf.config import DataConfig, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from noisy_student_tf.train.loop import Trainer  # noqa: E402

STEPS = 4


def config():
    return RunConfig(
        model=ModelConfig(num_classes=3, image_size=16, small_image_model=True, dropout_rate=0.0,
                          stochastic_depth_rate=0.0, width_coefficient=0.1,
                          depth_coefficient=0.1),
        data=DataConfig(num_train_images=40, mean_rgb=(127.0,) * 3, stddev_rgb=(60.0,) * 3),
        train=TrainConfig(train_steps=100, train_batch_size=8, base_learning_rate=0.5),
    )


def batches(n):
    rng = np.random.RandomState(0)
    return [{"image": rng.randint(0, 255, (n, 16, 16, 3)).astype(np.uint8),
             "label": rng.randint(0, 3, n).astype(np.int32)} for _ in range(STEPS)]


def curve(strategy, per_replica, repeat):
    trainer = Trainer(config(), strategy)
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
    loop = trainer._make_train_loop()
    return [float(loop(iterator, tf.constant(1))[0]["train/loss"]) for _ in range(STEPS)]


init_weights = Trainer(config(), tf.distribute.get_strategy()).model.get_weights()
mirrored = distribute.get_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
assert mirrored.num_replicas_in_sync == 2
result = {"mirrored": curve(mirrored, 4, 1), "single": curve(tf.distribute.get_strategy(), 4, 2)}
print(json.dumps(result))
