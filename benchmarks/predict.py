"""Prediction throughput: the prediction tool (main.py --mode=predict's code path, output file
included) vs Keras `model.predict` on the same images, model and batch size.

    python benchmarks/predict.py --image_size=32 --num_images=4096 --batch_size=256
    python benchmarks/predict.py --image_size=224 --num_images=512 --batch_size=64

Both read the same TFRecord shard of JPEGs through the same decode + eval preprocessing; Keras
gets the normalised images from tf.data and only returns probabilities (nothing written); ours
also serializes and writes `train-info-*`. Rounds alternate; the table shows medians and the
ratio ours / Keras (>= 0.95 is the target).
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from noisy_student_tf.data import preprocess, records  # noqa: E402
from noisy_student_tf.models import efficientnet  # noqa: E402
from noisy_student_tf.pseudo import predict as predict_lib  # noqa: E402

MEAN, STD = (123.675, 116.28, 103.53), (58.395, 57.12, 57.375)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image_size", type=int, default=32)
    p.add_argument("--num_images", type=int, default=4096)
    p.add_argument("--batch_size", type=int, default=256)
    p.add_argument("--width", type=float, default=0.5)
    p.add_argument("--depth", type=float, default=0.5)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    small = args.image_size == 32
    work = tempfile.mkdtemp()
    rng = np.random.default_rng(0)
    src = 40 if small else args.image_size + 32
    shard = os.path.join(work, "unl", records.shard_name("extra", 0, 1))
    os.makedirs(os.path.dirname(shard))
    with tf.io.TFRecordWriter(shard) as w:
        for _ in range(args.num_images):
            img = rng.integers(0, 256, (src, src, 3), dtype=np.uint8)
            w.write(records.unlabeled_only_example(tf.io.encode_jpeg(img, quality=95).numpy()))
    keras.utils.set_random_seed(0)
    model = efficientnet.build_model("efficientnet-b0", 1000, width_coefficient=args.width,
                                     depth_coefficient=args.depth, small_image_model=small)
    cfg = predict_lib.PredictConfig(
        label_data_dir=os.path.join(work, "unl"), output_dir=os.path.join(work, "pred"),
        info_dir=os.path.join(work, "info"), image_size=args.image_size, small_image=small,
        num_classes=1000, mean_rgb=MEAN, stddev_rgb=STD, file_prefix="extra", num_shards=1,
        batch_size=args.batch_size)
    predictor = predict_lib.Predictor(model, cfg)

    def keras_ds():
        def parse(s):
            ex = tf.io.parse_single_example(s, {records.IMAGE_KEY: tf.io.FixedLenFeature(
                [], tf.string)})
            img = preprocess.preprocess_for_eval(preprocess.decode(ex[records.IMAGE_KEY]),
                                                 args.image_size, small)
            return (tf.cast(img, tf.float32) - MEAN) / STD
        return tf.data.TFRecordDataset(shard).map(parse, num_parallel_calls=tf.data.AUTOTUNE,
                                                  deterministic=True).batch(
            args.batch_size).prefetch(2)

    def run_ours():
        shutil.rmtree(cfg.output_dir, ignore_errors=True)
        shutil.rmtree(cfg.info_dir, ignore_errors=True)
        t0 = time.time()
        predict_lib.predict_shard(predictor, cfg, 0)
        return args.num_images / (time.time() - t0)

    def run_keras():
        t0 = time.time()
        out = model.predict(keras_ds(), verbose=0)
        assert out.shape == (args.num_images, 1000)
        return args.num_images / (time.time() - t0)

    run_ours(), run_keras()  # warm-up: tracing
    ours, keras_rates = [], []
    for _ in range(args.rounds):
        ours.append(run_ours())
        keras_rates.append(run_keras())
    o, k = statistics.median(ours), statistics.median(keras_rates)
    print(f"\nEfficientNet-B0 w/d {args.width}/{args.depth}, {args.image_size}px, batch "
          f"{args.batch_size}, {args.num_images} images, {args.rounds} rounds (medians)")
    print("| path | images/s |\n|---|---|")
    print(f"| keras model.predict | {k:.0f} |\n| ours (predict_shard, file written) | {o:.0f} |")
    print(f"ratio_predict_{args.image_size}={o / k:.3f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
