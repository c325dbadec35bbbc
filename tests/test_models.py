"""EfficientNet builder: scaling table, rounding, parameter counts, small-image variant."""

import keras
import numpy as np
import pytest

from noisy_student_tf import build_model
from noisy_student_tf.models import efficientnet
from noisy_student_tf.models import params as P

# Trainable parameters with 1000 classes (= keras.applications EfficientNetB0-B7).
EXPECTED_PARAMS = {
    "efficientnet-b0": 5288548, "efficientnet-b1": 7794184, "efficientnet-b2": 9109994,
    "efficientnet-b3": 12233232, "efficientnet-b4": 19341616, "efficientnet-b5": 30389784,
    "efficientnet-b6": 43040704, "efficientnet-b7": 66347960,
}
# stem, stage outputs, repeats per stage, head.
EXPECTED_SHAPES = {
    "efficientnet-b0": (32, (16, 24, 40, 80, 112, 192, 320), (1, 2, 2, 3, 3, 4, 1), 1280),
    "efficientnet-b2": (32, (16, 24, 48, 88, 120, 208, 352), (2, 3, 3, 4, 4, 5, 2), 1408),
    "efficientnet-b3": (40, (24, 32, 48, 96, 136, 232, 384), (2, 3, 3, 5, 5, 6, 2), 1536),
    "efficientnet-b4": (48, (24, 32, 56, 112, 160, 272, 448), (2, 4, 4, 6, 6, 8, 2), 1792),
    "efficientnet-b5": (48, (24, 40, 64, 128, 176, 304, 512), (3, 5, 5, 7, 7, 9, 3), 2048),
    "efficientnet-b6": (56, (32, 40, 72, 144, 200, 344, 576), (3, 6, 6, 8, 8, 11, 3), 2304),
    "efficientnet-b7": (64, (32, 48, 80, 160, 224, 384, 640), (4, 7, 7, 10, 10, 13, 4), 2560),
    "efficientnet-l2": (136, (72, 104, 176, 344, 480, 824, 1376), (6, 11, 11, 16, 16, 22, 6), 5504),
}
KERAS_APPS = {
    "efficientnet-b0": "EfficientNetB0", "efficientnet-b1": "EfficientNetB1",
    "efficientnet-b2": "EfficientNetB2", "efficientnet-b3": "EfficientNetB3",
    "efficientnet-b4": "EfficientNetB4", "efficientnet-b5": "EfficientNetB5",
    "efficientnet-b6": "EfficientNetB6", "efficientnet-b7": "EfficientNetB7",
}


def trainable(model):
    return sum(int(np.prod(v.shape)) for v in model.trainable_variables)


def test_scaling_table_matches_upstream():
    assert P.MODEL_PARAMS["efficientnet-b0"] == (1.0, 1.0, 224, 0.2)
    assert P.MODEL_PARAMS["efficientnet-b4"] == (1.4, 1.8, 380, 0.4)
    assert P.MODEL_PARAMS["efficientnet-b7"] == (2.0, 3.1, 600, 0.5)
    assert P.MODEL_PARAMS["efficientnet-l2"] == (4.3, 5.3, 800, 0.5)
    _, gp = P.get_model_params("efficientnet-b0")
    assert (gp.batch_norm_momentum, gp.batch_norm_epsilon, gp.stochastic_depth_rate) == (
        0.99, 1e-3, 0.2)


def test_decode_block_string():
    b = P.decode_block_string("r2_k5_s22_e6_i24_o40_se0.25")
    assert (b.num_repeat, b.kernel_size, b.strides, b.expand_ratio) == (2, 5, 2, 6)
    assert (b.input_filters, b.output_filters, b.se_ratio, b.id_skip) == (24, 40, 0.25, True)
    assert not P.decode_block_string("r1_k3_s11_e1_i32_o16_noskip").id_skip


@pytest.mark.parametrize("name", sorted(EXPECTED_SHAPES))
def test_rounding_gives_upstream_shapes(name):
    blocks, gp = P.get_model_params(name)
    stem, outs, repeats, head = EXPECTED_SHAPES[name]
    assert P.round_filters(P.STEM_FILTERS, gp) == stem
    assert tuple(P.round_filters(b.output_filters, gp) for b in blocks) == outs
    assert tuple(P.round_repeats(b.num_repeat, gp) for b in blocks) == repeats
    assert P.round_filters(P.HEAD_FILTERS, gp) == head


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_param_arithmetic_all_sizes(name):
    blocks, gp = P.get_model_params(name, 1000)
    assert P.count_trainable_params(blocks, gp) == EXPECTED_PARAMS[name]


def test_l2_params_by_arithmetic():
    blocks, gp = P.get_model_params("efficientnet-l2", 1000)
    n = P.count_trainable_params(blocks, gp)
    assert abs(n - 480e6) / 480e6 < 0.01, n
    assert len(P.expand_blocks(blocks, gp)) == 88


@pytest.mark.parametrize("name", ["efficientnet-b0", "efficientnet-b1", "efficientnet-b2",
                                  "efficientnet-b3"])
def test_built_params_equal_keras_applications(name):
    ours = build_model(name, 1000)
    ref = getattr(keras.applications, KERAS_APPS[name])(weights=None)
    assert trainable(ours) == trainable(ref) == EXPECTED_PARAMS[name]
    blocks, gp = P.get_model_params(name, 1000)
    assert P.count_trainable_params(blocks, gp) == trainable(ours)


@pytest.mark.optin
@pytest.mark.parametrize("name", ["efficientnet-b4", "efficientnet-b5", "efficientnet-b6",
                                  "efficientnet-b7"])
def test_built_params_equal_keras_applications_large(name):
    ours = build_model(name, 1000)
    ref = getattr(keras.applications, KERAS_APPS[name])(weights=None)
    assert trainable(ours) == trainable(ref) == EXPECTED_PARAMS[name]


def test_b0_ten_classes_and_bn_statistics():
    model = build_model("efficientnet-b0", 10)
    assert trainable(model) == 4020358
    moving = sum(int(np.prod(v.shape)) for v in model.non_trainable_variables
                 if "moving" in v.path)
    assert moving == 42016  # upstream: BN moving statistics of b0


def test_small_image_model_ends_at_4x4():
    model = build_model("efficientnet-b0", 10, small_image_model=True, input_image_size=32)
    head = model.get_layer("head_conv")
    assert head.output.shape[1:3] == (4, 4)
    big = build_model("efficientnet-b0", 10, input_image_size=32)
    assert big.get_layer("head_conv").output.shape[1:3] == (1, 1)


def test_stochastic_depth_grows_linearly_and_skips_block_0():
    model = build_model("efficientnet-b0", 10, stochastic_depth_rate=0.4)
    n = 16
    rates = {lyr.name: lyr.rate for lyr in model.layers if lyr.name.endswith("_drop")}
    # Only blocks with a residual (stride 1, same filters) carry stochastic depth; block 0
    # (rate 0) has none.
    assert "blocks_0_drop" not in rates
    for name, rate in rates.items():
        idx = int(name.split("_")[1])
        assert rate == pytest.approx(0.4 * idx / n)
    assert rates["blocks_14_drop"] == pytest.approx(0.4 * 14 / 16)
    assert "blocks_15_drop" not in rates  # 192 -> 320 filters: no residual
    assert model.get_layer("blocks_14_drop").noise_shape == (None, 1, 1, 1)


def test_overrides_and_head_dropout():
    model = build_model("efficientnet-b0", 10, dropout_rate=0.0, width_coefficient=0.5,
                        depth_coefficient=0.5)
    assert all(lyr.name != "head_dropout" for lyr in model.layers)
    assert model.get_layer("stem_conv").filters == 16
    assert build_model("efficientnet-b2", 10).get_layer("head_dropout").rate == 0.3


def test_initializers_follow_upstream():
    keras.utils.set_random_seed(0)
    model = build_model("efficientnet-b0", 10)
    head = model.get_layer("head_conv").kernel.numpy()  # [1, 1, 320, 1280]
    assert np.std(head) == pytest.approx(np.sqrt(2.0 / 1280), rel=0.05)
    dw = model.get_layer("blocks_1_dwconv").kernel.numpy()  # [3, 3, 96, 1], fan_out = 9
    assert np.std(dw) == pytest.approx(np.sqrt(2.0 / 9), rel=0.1)
    dense = model.get_layer("head_dense").kernel.numpy()
    assert np.abs(dense).max() <= 1 / np.sqrt(10) + 1e-6
    assert np.abs(dense).max() > 0.9 / np.sqrt(10)


def test_weight_decay_and_ema_variable_sets():
    model = build_model("efficientnet-b0", 10, width_coefficient=0.1, depth_coefficient=0.1)
    wd = efficientnet.weight_decay_variables(model)
    assert wd and not any("bn" in v.path for v in wd)
    assert any(v.path.endswith("se_reduce/bias") for v in wd)  # SE biases decay, as upstream
    ema = efficientnet.ema_variables(model)
    n_bn = len(efficientnet.batch_norm_layers(model))
    assert len(ema) == len(model.trainable_variables) + 2 * n_bn
    assert sum("moving_variance" in v.path for v in ema) == n_bn


def test_bad_model_name():
    with pytest.raises(ValueError, match="efficientnet-b9"):
        build_model("efficientnet-b9")


def test_initial_weights_are_seeded_and_differ_between_layers():
    """Each layer draws its own initial kernel (one shared Keras initializer used to give every
    kernel of a shape the same values), reproducibly under keras.utils.set_random_seed."""
    def build():
        return efficientnet.build_model("efficientnet-b0", 10, width_coefficient=0.1,
                                        depth_coefficient=0.1, small_image_model=True)

    keras.utils.set_random_seed(3)
    a = build()
    keras.utils.set_random_seed(3)
    b = build()
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)
    by_shape = {}
    for layer in a.layers:
        if isinstance(layer, keras.layers.Conv2D) and not layer.use_bias:
            by_shape.setdefault(tuple(layer.kernel.shape), []).append(layer.kernel.numpy())
    pairs = [ks for ks in by_shape.values() if len(ks) > 1]
    assert pairs, "the tiny model has no two kernels of one shape"
    for ks in pairs:
        assert not np.array_equal(ks[0], ks[1])
