"""SavedModel export for serving, and an exported SavedModel used as a frozen teacher.

The export holds the inference model only (EMA weights, BN in inference mode, no dropout, no
teacher, no augmentation) and three signatures:

- `serving_default`: `images` tf.string [B] of encoded JPEG/PNG/GIF/BMP bytes -> the model's own
  eval preprocessing (centre crop + TF1 bicubic resize, or the 32x32 small-image path) ->
  `probabilities` [B, C], `classes` [B], `top_k_probabilities` / `top_k_classes` [B, k];
- `serving_images`: `images` uint8 [B, S, S, 3] already at the input size -> the same outputs;
- `logits`: `images` uint8 [B, S, S, 3] -> `logits` [B, C], normalised with the export's own
  mean/std; what a teacher needs, so the prediction tool and the online student can run an
  exported model (even one trained on data with other statistics).

`run_config.json` beside `saved_model.pb` records the architecture, input size and mean/std
(TF Serving ignores extra files in the directory).
"""

import os
import shutil
from typing import Optional

import keras
import tensorflow as tf

from noisy_student_tf import io_utils
from noisy_student_tf.data import preprocess
from noisy_student_tf.errors import UserInputError

CONFIG_FILE = "run_config.json"
# Leading bytes of the formats tf.io.decode_image reads.
_MAGIC = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM")


def is_saved_model(path: str) -> bool:
    return bool(path) and tf.io.gfile.exists(os.path.join(path, "saved_model.pb"))


def _check_image_bytes(images):
    """Fails the request (InvalidArgumentError naming the first bad index) unless every string
    starts like a JPEG, PNG, GIF or BMP file."""
    ok = tf.zeros(tf.shape(images), tf.bool)
    for magic in _MAGIC:
        ok = tf.logical_or(ok, tf.equal(tf.strings.substr(images, 0, len(magic)), magic))
    bad = tf.where(tf.logical_not(ok))
    first_bad = tf.cond(tf.size(bad) > 0, lambda: bad[0, 0], lambda: tf.constant(-1, tf.int64))
    return tf.debugging.Assert(
        tf.reduce_all(ok),
        ["images[", first_bad, "] is not JPEG, PNG, GIF or BMP bytes"], name="check_images")


def export_saved_model(model, export_dir: str, *, image_size: int, small_image: bool,
                       mean_rgb, stddev_rgb, top_k: int = 5,
                       run_config: Optional[dict] = None) -> str:
    """Writes `model` (inference weights already loaded) as a SavedModel at `export_dir`,
    atomically (a temporary directory renamed into place). Refuses to overwrite an export.
    Returns export_dir."""
    if is_saved_model(export_dir):
        raise UserInputError(f"--export_dir={export_dir!r} already holds a SavedModel; "
                             "choose a new directory (TF Serving: one numbered subdirectory "
                             "per version)")
    if tf.io.gfile.exists(export_dir) and tf.io.gfile.listdir(export_dir):
        raise UserInputError(f"--export_dir={export_dir!r} exists and is not empty")
    num_classes = int(model.output_shape[-1])
    k = max(1, min(top_k, num_classes))
    size = image_size

    def outputs(uint8_images):
        x = preprocess.normalize(uint8_images, mean_rgb, stddev_rgb)
        probs = tf.nn.softmax(tf.cast(model(x, training=False), tf.float32))
        top = tf.math.top_k(probs, k)
        return {"probabilities": probs, "classes": tf.argmax(probs, axis=-1),
                "top_k_probabilities": top.values, "top_k_classes": top.indices}

    def serve_encoded(images):
        with tf.control_dependencies([_check_image_bytes(images)]):
            images = tf.identity(images)

        def one(encoded):
            image = preprocess.decode(encoded)
            return preprocess.preprocess_for_eval(image, size, small_image)

        batch = tf.map_fn(one, images, fn_output_signature=tf.TensorSpec([size, size, 3],
                                                                         tf.uint8))
        return outputs(batch)

    def serve_images(images):
        return outputs(images)

    def logits(images):
        x = preprocess.normalize(images, mean_rgb, stddev_rgb)
        return {"logits": tf.cast(model(x, training=False), tf.float32)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serving_default", serve_encoded,
                         [tf.TensorSpec([None], tf.string, name="images")])
    archive.add_endpoint("serving_images", serve_images,
                         [tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")])
    archive.add_endpoint("logits", logits,
                         [tf.TensorSpec([None, size, size, 3], tf.uint8, name="images")])
    parent = os.path.dirname(os.path.abspath(export_dir))
    tf.io.gfile.makedirs(parent)
    tmp = f"{export_dir.rstrip('/')}.tmp-{os.getpid()}"
    if tf.io.gfile.exists(tmp):
        shutil.rmtree(tmp)
    try:
        archive.write_out(tmp, verbose=False)
        io_utils.write_json_atomic(os.path.join(tmp, CONFIG_FILE), run_config or {})
        if tf.io.gfile.exists(export_dir):  # empty (checked above)
            tf.io.gfile.rmtree(export_dir)
        os.rename(tmp, export_dir)
    finally:
        if tf.io.gfile.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    return export_dir


class SavedModelTeacher:
    """An exported SavedModel behind the Keras-model call: `model(uint8 images, training=False)
    -> logits`. It takes the eval view unnormalised: the export applies the mean/std it was
    trained with (teacher.Teacher passes uint8 images to it as they are)."""

    def __init__(self, path: str, image_size: int, num_classes: int, flag: str):
        self.path = path
        try:
            self._loaded = tf.saved_model.load(path)
        except (OSError, ValueError, tf.errors.OpError) as e:
            raise UserInputError(f"--{flag}={path!r}: not a loadable SavedModel "
                                 f"({str(e).strip().splitlines()[0][:200]})") from None
        if not hasattr(self._loaded, "logits"):
            raise UserInputError(f"--{flag}={path!r}: this SavedModel has no `logits` "
                                 "endpoint (export it with main.py --mode=export)")
        spec = self._loaded.logits.input_signature[0]
        saved = io_utils.read_json(os.path.join(path, CONFIG_FILE), {}).get("model", {})
        if spec.shape[1] != image_size or saved.get("num_classes", num_classes) != num_classes:
            raise UserInputError(
                f"--{flag}={path!r} takes {spec.shape[1]}px images and predicts "
                f"{saved.get('num_classes')} classes; this run needs {image_size}px and "
                f"{num_classes}")
        self.layers = []  # no Keras layers: cannot initialise a student's weights

    def __call__(self, images, training: bool = False):
        del training  # always inference mode
        return self._loaded.logits(tf.cast(images, tf.uint8))["logits"]
