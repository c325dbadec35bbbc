"""Cost of the record checks against reading the same file through the eval pipeline: the frame
header walk every reader does first (data/framing.py, every run) and the full record check
(data/validate.py: --skip_corrupt_records, locating a bad record).

    python benchmarks/record_check.py
"""

import os
import shutil
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from noisy_student_tf.data import framing, pipeline, records, validate  # noqa: E402


def main():
    rng = np.random.default_rng(0)
    work = tempfile.mkdtemp()
    print(f"{'records':<22}{'framing rec/s':>15}{'scan rec/s':>12}{'eval pipeline rec/s':>21}"
          f"{'framing / eval time':>21}")
    try:
        for size, n in ((32, 20000), (256, 2000)):
            images = [tf.io.encode_jpeg(rng.integers(0, 256, (size, size, 3), dtype=np.uint8),
                                        quality=90).numpy() for _ in range(50)]
            path = os.path.join(work, f"train-{size}")
            with tf.io.TFRecordWriter(path) as w:
                for i in range(n):
                    w.write(records.labeled_example(images[i % 50], i % 10 + 1))
            framing._cache.clear()
            t0 = time.time()
            assert framing.walk(path).records == n
            frames = n / (time.time() - t0)
            framing._cache.clear()
            t0 = time.time()
            report = validate.scan([path], "labeled", 10)
            scan = n / (time.time() - t0)
            assert not report.bad
            cfg = pipeline.InputConfig(image_size=32 if size == 32 else 224, num_classes=10,
                                       small_image=size == 32)
            t0 = time.time()
            framing._cache.clear()  # the eval pipeline's own walk is part of its time
            read = sum(int(b["label"].shape[0]) for b in pipeline.eval_dataset([path], cfg, 256))
            rate = read / (time.time() - t0)
            print(f"{f'{n:,} x {size}px JPEG':<22}{frames:>15.0f}{scan:>12.0f}{rate:>21.0f}"
                  f"{rate / frames:>20.1%}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
