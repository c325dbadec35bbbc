"""EfficientNet scaling table, block arguments and rounding rules.

Everything here is plain Python so configs can be checked (and parameter counts computed) without
building a model. Numbers follow upstream efficientnet_builder.py / efficientnet_model.py
(upstream efficientnet_builder.py).
"""

import dataclasses
import math
from typing import Optional

# name: (width_coefficient, depth_coefficient, resolution, dropout_rate)
MODEL_PARAMS = {
    "efficientnet-b0": (1.0, 1.0, 224, 0.2),
    "efficientnet-b1": (1.0, 1.1, 240, 0.2),
    "efficientnet-b2": (1.1, 1.2, 260, 0.3),
    "efficientnet-b3": (1.2, 1.4, 300, 0.3),
    "efficientnet-b4": (1.4, 1.8, 380, 0.4),
    "efficientnet-b5": (1.6, 2.2, 456, 0.4),
    "efficientnet-b6": (1.8, 2.6, 528, 0.5),
    "efficientnet-b7": (2.0, 3.1, 600, 0.5),
    "efficientnet-l2": (4.3, 5.3, 800, 0.5),
}

# The 32x32 small-image variant for small data sets (this port's presets, not upstream's: upstream
# trains full B0 on SVHN). Each model keeps upstream's compound scaling relative to B0 at half the
# width and depth, so a larger name is a larger network at the same 32x32 resolution; B0 here is
# 0.68M parameters at 10 classes and trains at ~200 images/s on 2 CPU cores (full B0: ~70).
# name: (width_coefficient, depth_coefficient, resolution, dropout_rate)
SMALL_IMAGE_PRESETS = {
    name: (round(w / 2, 3), round(d / 2, 3), 32, dropout)
    for name, (w, d, _, dropout) in MODEL_PARAMS.items()
}

# The seven base stages, in upstream's block-string notation.
BLOCK_STRINGS = (
    "r1_k3_s11_e1_i32_o16_se0.25",
    "r2_k3_s22_e6_i16_o24_se0.25",
    "r2_k5_s22_e6_i24_o40_se0.25",
    "r3_k3_s22_e6_i40_o80_se0.25",
    "r3_k5_s11_e6_i80_o112_se0.25",
    "r4_k5_s22_e6_i112_o192_se0.25",
    "r1_k3_s11_e6_i192_o320_se0.25",
)

STEM_FILTERS = 32
HEAD_FILTERS = 1280


@dataclasses.dataclass(frozen=True)
class BlockArgs:
    """One stage of MBConv blocks (before depth scaling)."""

    kernel_size: int
    num_repeat: int
    input_filters: int
    output_filters: int
    expand_ratio: int
    strides: int
    se_ratio: Optional[float]
    id_skip: bool = True


@dataclasses.dataclass(frozen=True)
class GlobalParams:
    """Model-wide settings; defaults are upstream's."""

    width_coefficient: float = 1.0
    depth_coefficient: float = 1.0
    resolution: int = 224
    dropout_rate: float = 0.2
    stochastic_depth_rate: float = 0.2
    batch_norm_momentum: float = 0.99
    batch_norm_epsilon: float = 1e-3
    depth_divisor: int = 8
    min_depth: Optional[int] = None
    num_classes: int = 1000
    small_image_model: bool = False


def decode_block_string(block_string: str) -> BlockArgs:
    """Parses upstream's `r1_k3_s11_e1_i32_o16_se0.25[_noskip]` notation."""
    options = {}
    id_skip = True
    for token in block_string.split("_"):
        if token == "noskip":
            id_skip = False
            continue
        key = token[:2] if token.startswith("se") else token[:1]
        options[key] = token[len(key):]
    strides = options["s"]
    if len(strides) != 2 or strides[0] != strides[1]:
        raise ValueError(f"Only square strides are supported, got {block_string!r}")
    return BlockArgs(
        kernel_size=int(options["k"]),
        num_repeat=int(options["r"]),
        input_filters=int(options["i"]),
        output_filters=int(options["o"]),
        expand_ratio=int(options["e"]),
        strides=int(strides[0]),
        se_ratio=float(options["se"]) if "se" in options else None,
        id_skip=id_skip,
    )


def round_filters(filters: int, params: GlobalParams) -> int:
    """Scales a channel count by the width coefficient and rounds to the depth divisor."""
    multiplier = params.width_coefficient
    if not multiplier:
        return filters
    divisor = params.depth_divisor
    min_depth = params.min_depth or divisor
    scaled = filters * multiplier
    new_filters = max(min_depth, int(scaled + divisor / 2) // divisor * divisor)
    if new_filters < 0.9 * scaled:  # never round down by more than 10%
        new_filters += divisor
    return int(new_filters)


def round_repeats(repeats: int, params: GlobalParams) -> int:
    if not params.depth_coefficient:
        return repeats
    return int(math.ceil(params.depth_coefficient * repeats))


def get_model_params(
    model_name: str,
    num_classes: int = 1000,
    *,
    dropout_rate: Optional[float] = None,
    stochastic_depth_rate: Optional[float] = None,
    width_coefficient: Optional[float] = None,
    depth_coefficient: Optional[float] = None,
    small_image_model: bool = False,
) -> tuple[list[BlockArgs], GlobalParams]:
    """Returns the stage list and global params for `model_name`, with overrides applied.

    `None` overrides keep the table value, as upstream's override dictionary does.
    """
    if model_name not in MODEL_PARAMS:
        raise ValueError(
            f"Unknown model_name {model_name!r}; expected one of {', '.join(MODEL_PARAMS)}"
        )
    width, depth, resolution, dropout = MODEL_PARAMS[model_name]
    params = GlobalParams(
        width_coefficient=width if width_coefficient is None else width_coefficient,
        depth_coefficient=depth if depth_coefficient is None else depth_coefficient,
        resolution=resolution,
        dropout_rate=dropout if dropout_rate is None else dropout_rate,
        stochastic_depth_rate=0.2 if stochastic_depth_rate is None else stochastic_depth_rate,
        num_classes=num_classes,
        small_image_model=small_image_model,
    )
    blocks = [decode_block_string(s) for s in BLOCK_STRINGS]
    if small_image_model:
        # upstream: stages 2 and 3 keep stride 1, so a 32x32 input ends at 4x4.
        blocks = [
            dataclasses.replace(b, strides=1) if i in (1, 2) else b for i, b in enumerate(blocks)
        ]
    return blocks, params


def param_count(model_name: str, num_classes: int, *, width_coefficient=None,
                depth_coefficient=None, small_image_model: bool = False) -> int:
    """Trainable parameters of a model configuration, by arithmetic (nothing is built)."""
    blocks, params = get_model_params(
        model_name, num_classes, width_coefficient=width_coefficient,
        depth_coefficient=depth_coefficient, small_image_model=small_image_model)
    return count_trainable_params(blocks, params)


def expand_blocks(blocks: list[BlockArgs], params: GlobalParams) -> list[BlockArgs]:
    """Applies width/depth scaling and returns one BlockArgs per block (num_repeat=1)."""
    out = []
    for stage in blocks:
        first = dataclasses.replace(
            stage,
            input_filters=round_filters(stage.input_filters, params),
            output_filters=round_filters(stage.output_filters, params),
            num_repeat=1,
        )
        out.append(first)
        rest = dataclasses.replace(first, input_filters=first.output_filters, strides=1)
        out.extend([rest] * (round_repeats(stage.num_repeat, params) - 1))
    return out


def count_trainable_params(blocks: list[BlockArgs], params: GlobalParams) -> int:
    """Trainable parameters by arithmetic (no model built): used for L2/B7-sized checks."""
    def bn(c):
        return 2 * c  # gamma, beta

    stem = round_filters(STEM_FILTERS, params)
    total = 3 * 3 * 3 * stem + bn(stem)
    for b in expand_blocks(blocks, params):
        cin, cout = b.input_filters, b.output_filters
        mid = cin * b.expand_ratio
        if b.expand_ratio != 1:
            total += cin * mid + bn(mid)
        total += b.kernel_size * b.kernel_size * mid + bn(mid)
        if b.se_ratio and 0 < b.se_ratio <= 1:
            se = max(1, int(cin * b.se_ratio))
            total += mid * se + se + se * mid + mid
        total += mid * cout + bn(cout)
    last = blocks[-1]
    head_in = round_filters(last.output_filters, params)
    head = round_filters(HEAD_FILTERS, params)
    total += head_in * head + bn(head)
    total += head * params.num_classes + params.num_classes
    return total
