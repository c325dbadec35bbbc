"""Upstream's TF1 checkpoints (google-research/noisystudent, tensorflow/tpu EfficientNet) <-> our
Keras model, by explicit name mapping (upstream efficientnet_model.py's variable scopes).

TF1 named layers by creation order inside each variable scope, so the same Keras layer is
`conv2d` in one block and `conv2d_1` in another; `tf1_layer_paths` spells the whole table out.
Kernel layouts agree (TF1 and Keras both store conv kernels [kh, kw, in, out], depthwise kernels
[kh, kw, in, 1] and dense kernels [in, out]), so values copy bit for bit.

Not checked against Google's published files (no internet where this was written): the names
follow the spec, and the tests write TF1 checkpoints under those names with `tf.raw_ops.SaveV2`.
A user verifies a real file with `tf.train.list_variables(path)`: every name must read
`<model_name>/stem/...`, `<model_name>/blocks_<i>/...` or `<model_name>/head/...` (optionally
under `teacher_model/`, with `/ExponentialMovingAverage` and `/RMSProp*` twins).
"""

import dataclasses
import os
import re
from typing import Dict, Optional, Tuple

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from noisy_student_tf import io_utils
from noisy_student_tf.errors import UserInputError
from noisy_student_tf.train import checkpoints

EMA_SUFFIX = "/ExponentialMovingAverage"
SLOT_SUFFIXES = ("/RMSProp", "/RMSProp_1", "/Momentum")  # optimizer state: never converted
IGNORED_NAMES = ("global_step",)
TEACHER_SCOPE = "teacher_model/"
_BN = "tpu_batch_normalization"


def tf1_layer_paths(model) -> Dict[str, str]:
    """Our layer name -> upstream's TF1 layer path under `<model_name>/`, for every layer of
    `model` (an efficientnet.build_model model) that has weights."""
    names = {lyr.name for lyr in model.layers}
    paths = {"stem_conv": "stem/conv2d", "stem_bn": f"stem/{_BN}",
             "head_conv": "head/conv2d", "head_bn": f"head/{_BN}", "head_dense": "head/dense"}
    i = 0
    while f"blocks_{i}_dwconv" in names:
        p, scope = f"blocks_{i}_", f"blocks_{i}/"
        bn = [f"{scope}{_BN}", f"{scope}{_BN}_1", f"{scope}{_BN}_2"]
        conv = [f"{scope}conv2d", f"{scope}conv2d_1"]
        expands = f"{p}expand_conv" in names
        if expands:  # TF1 order: expand conv, bn0, depthwise, bn1, se, project conv, bn2
            paths[f"{p}expand_conv"], paths[f"{p}expand_bn"] = conv.pop(0), bn.pop(0)
        paths[f"{p}dwconv"] = f"{scope}depthwise_conv2d"
        paths[f"{p}dw_bn"] = bn.pop(0)
        if f"{p}se_reduce" in names:
            paths[f"{p}se_reduce"] = f"{scope}se/conv2d"
            paths[f"{p}se_expand"] = f"{scope}se/conv2d_1"
        paths[f"{p}project_conv"] = conv.pop(0)
        paths[f"{p}project_bn"] = bn.pop(0)
        i += 1
    with_weights = {lyr.name for lyr in model.layers if lyr.weights}
    if set(paths) != with_weights:  # the model grew a layer this table does not know
        raise ValueError(f"no upstream name for layers {sorted(with_weights - set(paths))}")
    return paths


def _leaf(layer, variable) -> str:
    """TF1's variable name inside its layer: kernel, bias, gamma, beta, moving_mean,
    moving_variance as Keras names them, except the depthwise kernel (Keras 3: `kernel`)."""
    name = variable.name.split("/")[-1].split(":")[0]
    if isinstance(layer, keras.layers.DepthwiseConv2D) and name == "kernel":
        return "depthwise_kernel"
    return name


def upstream_variable_names(model, model_name: str) -> list:
    """[(keras variable, upstream name)] for every weight of `model`, e.g.
    `efficientnet-b0/blocks_0/depthwise_conv2d/depthwise_kernel`."""
    paths = tf1_layer_paths(model)
    return [(v, f"{model_name}/{paths[lyr.name]}/{_leaf(lyr, v)}")
            for lyr in model.layers if lyr.weights for v in lyr.weights]


@dataclasses.dataclass(frozen=True)
class ConversionReport:
    source: str
    scope: str  # '' for the student's names, 'teacher_model/' for a teacher's
    used_ema: bool
    converted: int
    ignored: Tuple[str, ...]  # optimizer slots, raw twins of EMA values, the other model, step


def resolve_input(path: str, flag: str = "input_checkpoint") -> str:
    """A TF1 checkpoint prefix, or a directory whose latest checkpoint is used."""
    if tf.io.gfile.isdir(path):
        latest = checkpoints.latest(path)
        if latest is not None:
            return latest
        # Downloads sometimes lack the `checkpoint` state file: take the only *.index.
        indexes = sorted(os.path.join(path, n) for n in tf.io.gfile.listdir(path)
                         if n.endswith(".index"))
        if len(indexes) != 1:
            raise UserInputError(f"--{flag}={path!r}: {len(indexes)} checkpoints (*.index) "
                                 "and no `checkpoint` file in this directory; pass a prefix")
        return indexes[0][:-len(".index")]
    if not tf.io.gfile.exists(path + ".index"):
        raise UserInputError(f"--{flag}={path!r}: no such checkpoint (no {path}.index)")
    return path


def _choose_scope(names, model_name: str, scope: str, source: str) -> str:
    student = any(n.startswith(f"{model_name}/") for n in names)
    teacher = any(n.startswith(f"{TEACHER_SCOPE}{model_name}/") for n in names)
    if scope == "auto":
        if student:
            return ""
        if teacher:
            return TEACHER_SCOPE
    elif scope == "student" and student:
        return ""
    elif scope == "teacher" and teacher:
        return TEACHER_SCOPE
    elif scope not in ("student", "teacher"):
        raise UserInputError(f"--scope={scope!r}; expected auto, student or teacher")
    found = sorted({n.split("/")[0] if not n.startswith(TEACHER_SCOPE)
                    else "/".join(n.split("/")[:2]) for n in names} - set(IGNORED_NAMES))
    where = {"auto": "", "student": "", "teacher": TEACHER_SCOPE}[scope]
    raise UserInputError(
        f"{source}: no variables under {where}{model_name}/ (a checkpoint of another model? "
        f"it holds: {', '.join(found) or 'nothing'})")


def read_upstream_checkpoint(model, model_name: str, path: str, use_ema: bool = True,
                             scope: str = "auto") -> ConversionReport:
    """Loads TF1 checkpoint `path` (upstream names) into `model`, in place.

    Every variable of the checkpoint is accounted for: mapped to a model weight (its EMA shadow
    when `use_ema`, else its raw value), an optimizer slot or raw twin (ignored, counted), the
    other model of an online-teacher checkpoint (ignored), or an error naming it.

    Raises UserInputError on a missing variable, an unmapped one, or a shape mismatch.
    """
    source = resolve_input(path)
    reader = tf.train.load_checkpoint(io_utils.tf_safe_prefix(source))
    shapes = reader.get_variable_to_shape_map()
    prefix = _choose_scope(shapes, model_name, scope, source)
    wanted = {prefix + name: v for v, name in upstream_variable_names(model, model_name)}
    ours = f"{prefix}{model_name}/"
    ignored, unmapped = [], []
    for name in sorted(shapes):
        base = name[:-len(EMA_SUFFIX)] if name.endswith(EMA_SUFFIX) else name
        base = next((base[:-len(s)] for s in SLOT_SUFFIXES if base.endswith(s)), base)
        if base in wanted:
            if name != (base + EMA_SUFFIX if use_ema else base):
                ignored.append(name)
        elif name in IGNORED_NAMES or (not name.startswith(ours)
                                       and _is_other_model(name, prefix)):
            ignored.append(name)
        else:
            unmapped.append(name)
    if unmapped:
        more = f" (+{len(unmapped) - 5} more)" if len(unmapped) > 5 else ""
        raise UserInputError(
            f"{source}: {len(unmapped)} variable(s) map to no layer of {model_name}: "
            f"{', '.join(unmapped[:5])}{more}")
    values = {}
    for name, var in wanted.items():
        key = name + EMA_SUFFIX if use_ema else name
        if key not in shapes:
            hint = (" (no EMA shadows? convert the raw weights with --use_ema=false)"
                    if use_ema and name in shapes else "")
            raise UserInputError(f"{source}: missing variable {key}{hint}")
        if tuple(shapes[key]) != tuple(var.shape):
            raise UserInputError(
                f"{source}: {key} has shape {tuple(shapes[key])}, the {model_name} built here "
                f"expects {tuple(var.shape)} (check --num_label_classes, width/depth and "
                "--model_name)")
        values[key] = var
    for key, var in values.items():
        value = reader.get_tensor(key)
        if value.dtype != np.dtype(var.dtype):
            logging.warning("%s is stored as %s; cast to %s", key, value.dtype, var.dtype)
        var.assign(value.astype(var.dtype))
    return ConversionReport(source=source, scope=prefix, used_ema=use_ema,
                            converted=len(values), ignored=tuple(ignored))


def _is_other_model(name: str, prefix: str) -> bool:
    """Variables of the other network in an online student's checkpoint: the teacher's
    (`teacher_model/<any model>/`) when converting the student, the student's
    (`efficientnet-*/`) when converting the teacher."""
    if prefix == "":
        return name.startswith(TEACHER_SCOPE)
    return bool(re.match(r"efficientnet-(b[0-7]|l2)/", name))


def write_upstream_checkpoint(model, model_name: str, prefix: str,
                              shadows: Optional[dict] = None, scope: str = "") -> str:
    """Writes `model`'s weights as a TF1 checkpoint under upstream's names (tf.raw_ops.SaveV2):
    raw values, plus `/ExponentialMovingAverage` twins taken from `shadows` (upstream name ->
    array) when given. Used by the tests and to hand weights back to upstream's code."""
    names, tensors = [], []
    for var, name in upstream_variable_names(model, model_name):
        names.append(scope + name)
        tensors.append(tf.convert_to_tensor(var))
        if shadows is not None:
            names.append(scope + name + EMA_SUFFIX)
            tensors.append(tf.convert_to_tensor(shadows[name], dtype=var.dtype))
    names.append("global_step")
    tensors.append(tf.constant(0, tf.int64))
    os.makedirs(os.path.dirname(os.path.abspath(prefix)), exist_ok=True)
    tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=tensors)
    return prefix
