"""EfficientNet B0-B7 / L2 as a Keras 3 functional model (keras.* only, so it runs on any backend).

Layer-for-layer as upstream efficientnet_model.py (class Model): stem conv,
MBConv blocks with squeeze-excite and stochastic depth growing linearly with the block index, head
conv, global pool, dropout, dense logits. Images go in already normalised; logits come out in
float32 even under a mixed-precision policy.
"""

import random as python_random
from typing import Optional

import keras

from noisy_student_tf.models import params as params_lib

# A Keras 3 initializer with a fixed (or no) seed returns the same values on every call, so one
# shared instance gave every kernel of a shape the same start. Each layer gets its own seed,
# drawn from Python's generator (keras.utils.set_random_seed seeds it: reproducible runs).
def conv_init() -> keras.initializers.Initializer:
    """upstream: conv kernels ~ N(0, sqrt(2 / fan_out)), fan_out = kh * kw * out_channels."""
    return keras.initializers.VarianceScaling(
        scale=2.0, mode="fan_out", distribution="untruncated_normal",
        seed=python_random.randint(1, 2**31 - 1))


def dense_init() -> keras.initializers.Initializer:
    """upstream: dense kernel ~ U(-1/sqrt(num_classes), 1/sqrt(num_classes))."""
    return keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode="fan_out", distribution="uniform",
        seed=python_random.randint(1, 2**31 - 1))


def _bn(gp: params_lib.GlobalParams, name: str) -> keras.layers.Layer:
    # Keras BN uses the biased batch variance for both normalising and the moving update, like
    # upstream's non-fused TF1 BN; moving <- 0.99 * moving + 0.01 * batch.
    return keras.layers.BatchNormalization(
        momentum=gp.batch_norm_momentum, epsilon=gp.batch_norm_epsilon, name=name
    )


def _conv(filters: int, kernel: int, name: str, strides: int = 1, bias: bool = False, act=None):
    return keras.layers.Conv2D(
        filters, kernel, strides=strides, padding="same", use_bias=bias, activation=act,
        kernel_initializer=conv_init(), name=name,
    )


def mbconv_block(
    x,
    block: params_lib.BlockArgs,
    gp: params_lib.GlobalParams,
    drop_rate: float,
    prefix: str,
):
    """One MBConv block: expand 1x1, depthwise kxk, squeeze-excite, project 1x1, residual."""
    inputs = x
    filters = block.input_filters * block.expand_ratio
    if block.expand_ratio != 1:
        x = _conv(filters, 1, f"{prefix}expand_conv")(x)
        x = _bn(gp, f"{prefix}expand_bn")(x)
        x = keras.layers.Activation("swish", name=f"{prefix}expand_act")(x)
    x = keras.layers.DepthwiseConv2D(
        block.kernel_size, strides=block.strides, padding="same", use_bias=False,
        depthwise_initializer=conv_init(), name=f"{prefix}dwconv",
    )(x)
    x = _bn(gp, f"{prefix}dw_bn")(x)
    x = keras.layers.Activation("swish", name=f"{prefix}dw_act")(x)
    if block.se_ratio and 0 < block.se_ratio <= 1:
        # upstream counts the squeeze width from the block's (rounded) input filters.
        se_filters = max(1, int(block.input_filters * block.se_ratio))
        s = keras.layers.GlobalAveragePooling2D(keepdims=True, name=f"{prefix}se_squeeze")(x)
        s = _conv(se_filters, 1, f"{prefix}se_reduce", bias=True, act="swish")(s)
        s = _conv(filters, 1, f"{prefix}se_expand", bias=True, act="sigmoid")(s)
        x = keras.layers.Multiply(name=f"{prefix}se_excite")([x, s])
    x = _conv(block.output_filters, 1, f"{prefix}project_conv")(x)
    x = _bn(gp, f"{prefix}project_bn")(x)
    if block.id_skip and block.strides == 1 and block.input_filters == block.output_filters:
        if drop_rate > 0:
            # Per-sample drop of the whole branch, rescaled by 1 / keep (upstream drop_connect).
            x = keras.layers.Dropout(
                drop_rate, noise_shape=(None, 1, 1, 1), name=f"{prefix}drop"
            )(x)
        x = keras.layers.Add(name=f"{prefix}add")([x, inputs])
    return x


def build_model(
    model_name: str,
    num_classes: int = 1000,
    *,
    dropout_rate: Optional[float] = None,
    stochastic_depth_rate: Optional[float] = None,
    width_coefficient: Optional[float] = None,
    depth_coefficient: Optional[float] = None,
    small_image_model: bool = False,
    input_image_size: Optional[int] = None,
    name: Optional[str] = None,
    fix_layer_num: int = -1,
) -> keras.Model:
    """Builds an EfficientNet that maps normalised images [B, H, W, 3] to logits [B, num_classes].

    Args:
        model_name: `efficientnet-b0` ... `efficientnet-b7` or `efficientnet-l2`.
        num_classes: size of the classification head.
        dropout_rate: head dropout; None keeps the table value.
        stochastic_depth_rate: base survival-drop rate (default 0.2); block i of n gets
            rate * i / n.
        width_coefficient, depth_coefficient: override the table's scaling coefficients.
        small_image_model: upstream's 32x32 variant (stages 2 and 3 with stride 1).
        input_image_size: static spatial size of the input; None accepts any size.
        name: Keras model name (defaults to `model_name`).
        fix_layer_num: upstream's freezing: N >= 0 freezes the stem (even for N = 0) and
            blocks 0..N-1: not trainable, BN in inference mode, no stochastic depth. Unlike
            upstream, frozen weights are still checkpointed, initialised and averaged.
    """
    blocks, gp = params_lib.get_model_params(
        model_name, num_classes,
        dropout_rate=dropout_rate, stochastic_depth_rate=stochastic_depth_rate,
        width_coefficient=width_coefficient, depth_coefficient=depth_coefficient,
        small_image_model=small_image_model,
    )
    size = input_image_size
    inputs = keras.Input((size, size, 3), name="image")
    x = _conv(params_lib.round_filters(params_lib.STEM_FILTERS, gp), 3, "stem_conv", strides=2)(
        inputs
    )
    x = _bn(gp, "stem_bn")(x)
    x = keras.layers.Activation("swish", name="stem_act")(x)

    expanded = params_lib.expand_blocks(blocks, gp)
    for idx, block in enumerate(expanded):
        frozen = idx < fix_layer_num
        drop_rate = 0.0 if frozen else gp.stochastic_depth_rate * idx / len(expanded)
        x = mbconv_block(x, block, gp, drop_rate, prefix=f"blocks_{idx}_")

    x = _conv(params_lib.round_filters(params_lib.HEAD_FILTERS, gp), 1, "head_conv")(x)
    x = _bn(gp, "head_bn")(x)
    x = keras.layers.Activation("swish", name="head_act")(x)
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(x)
    if gp.dropout_rate and gp.dropout_rate > 0:
        x = keras.layers.Dropout(gp.dropout_rate, name="head_dropout")(x)
    logits = keras.layers.Dense(
        num_classes, kernel_initializer=dense_init(), dtype="float32", name="head_dense"
    )(x)
    model = keras.Model(inputs, logits, name=(name or model_name).replace("-", "_"))
    model.global_params = gp
    if fix_layer_num >= 0:
        frozen = ("stem_",) + tuple(f"blocks_{i}_" for i in range(fix_layer_num))
        for layer in model.layers:
            if layer.name.startswith(frozen):
                layer.trainable = False  # Keras BN then also runs in inference mode
    return model


def batch_norm_layers(model: keras.Model) -> list:
    return [lyr for lyr in model.layers if isinstance(lyr, keras.layers.BatchNormalization)]


def weight_decay_variables(model: keras.Model) -> list:
    """Trainable variables outside batch norm: upstream's L2 set (names lacking
    `batch_normalization`), i.e. conv/dense kernels plus SE and dense biases."""
    bn_ids = {id(v) for lyr in batch_norm_layers(model) for v in lyr.weights}
    return [v for v in model.trainable_variables if id(v) not in bn_ids]


def ema_variables(model: keras.Model) -> list:
    """Variables upstream averages: all trainable ones plus BN moving mean/variance; then the
    weights of layers frozen by fix_layer_num (upstream left those out of its EMA and
    checkpoint initialisation, so eval and a resumed teacher lost them; fixed)."""
    moving = []
    for lyr in batch_norm_layers(model):
        moving.extend([lyr.moving_mean, lyr.moving_variance])
    listed = {id(v) for v in moving} | {id(v) for v in model.trainable_variables}
    frozen = [v for lyr in model.layers if not lyr.trainable for v in lyr.weights
              if id(v) not in listed and "float" in str(v.dtype)]
    return list(model.trainable_variables) + moving + frozen
