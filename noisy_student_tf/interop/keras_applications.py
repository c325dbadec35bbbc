"""keras.applications EfficientNetB0-B7 weight files (`*.weights.h5`) -> our model, layer by layer.

Keras names blocks by stage and letter (`block2b_expand_conv`); ours are numbered over the whole
network (`blocks_2_expand_conv`). Keras reads its own file format into its own architecture, and
`load_keras_applications_weights` then copies each layer into ours under an explicit name table,
checking shapes. keras.applications puts `Rescaling(1/255)` and an ImageNet `Normalization` in
front of the network; our pipeline normalises with the task's mean/std instead, so those two
layers are not copied (for ImageNet the two agree). Weight files saved with `include_top=False`
have no classifier and are refused: a teacher needs its head.
"""

import keras
import numpy as np

from noisy_student_tf.errors import UserInputError
from noisy_student_tf.models import params as params_lib

CONSTRUCTORS = {f"efficientnet-b{i}": f"EfficientNetB{i}" for i in range(8)}
_BLOCK_LAYERS = {"expand_conv": "expand_conv", "expand_bn": "expand_bn", "dwconv": "dwconv",
                 "dw_bn": "bn", "se_reduce": "se_reduce", "se_expand": "se_expand",
                 "project_conv": "project_conv", "project_bn": "project_bn"}
_OTHER_LAYERS = {"stem_conv": "stem_conv", "stem_bn": "stem_bn", "head_conv": "top_conv",
                 "head_bn": "top_bn", "head_dense": "predictions"}


def is_weights_file(path: str) -> bool:
    return str(path).endswith(".weights.h5")


def layer_name_table(model_name: str) -> dict:
    """Our layer name -> keras.applications layer name, for every layer with weights."""
    blocks, gp = params_lib.get_model_params(model_name)
    table = dict(_OTHER_LAYERS)
    idx = 0
    for stage, block in enumerate(blocks, start=1):
        for j in range(params_lib.round_repeats(block.num_repeat, gp)):
            for ours, theirs in _BLOCK_LAYERS.items():
                table[f"blocks_{idx}_{ours}"] = f"block{stage}{chr(ord('a') + j)}_{theirs}"
            idx += 1
    return table


def load_keras_applications_weights(model, model_name: str, path: str, flag: str) -> int:
    """Copies a keras.applications `.weights.h5` file into `model` (built by
    efficientnet.build_model for `model_name` with no width/depth overrides). Returns the number
    of layers copied. Raises UserInputError naming the file on any mismatch."""
    if model_name not in CONSTRUCTORS:
        raise UserInputError(f"--{flag}={path!r}: keras.applications has no {model_name} "
                             f"(only {', '.join(CONSTRUCTORS)})")
    num_classes = model.output_shape[-1]
    source = getattr(keras.applications, CONSTRUCTORS[model_name])(
        weights=None, include_top=True, classes=num_classes, classifier_activation=None)
    try:
        source.load_weights(path)
    except (ValueError, OSError, KeyError) as e:
        first = str(e).strip().splitlines()[0][:300]
        raise UserInputError(
            f"--{flag}={path!r} is not a keras.applications {CONSTRUCTORS[model_name]} "
            f"weights file with a {num_classes}-class top: {first}") from None
    ours = {lyr.name for lyr in model.layers if lyr.weights}
    table = {k: v for k, v in layer_name_table(model_name).items() if k in ours}
    theirs = {lyr.name for lyr in source.layers
              if lyr.weights and not isinstance(lyr, keras.layers.Normalization)}
    if set(table) != ours or set(table.values()) != theirs:
        missing = sorted(ours - set(table)) + sorted(theirs ^ set(table.values()))
        raise UserInputError(f"--{flag}={path!r}: layers without a counterpart: "
                             f"{', '.join(missing[:5])} (width/depth overrides are not "
                             "supported for keras.applications files)")
    for our_name, their_name in table.items():
        dst, src = model.get_layer(our_name), source.get_layer(their_name)
        values = src.get_weights()
        for var, value in zip(dst.weights, values):
            if tuple(var.shape) != value.shape:
                raise UserInputError(f"--{flag}={path!r}: {their_name} has shape "
                                     f"{value.shape}, our {our_name} {tuple(var.shape)}")
        dst.set_weights([np.asarray(v) for v in values])
    return len(table)
