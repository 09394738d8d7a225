"""Model registry: the architectures of the mode-connectivity literature, as plain nn.Modules.

Every model is a plain `nn.Module` whose forward is written so that a whole *population* of
members can be run at once with `torch.func.functional_call` under `torch.func.vmap` (stacked
parameters and buffers along a leading member dimension): no in-place ops on activations, no
data-dependent Python control flow, no `.item()`. Any Python branching in `forward` depends
only on constants fixed at construction.

Inputs are `[B, *input_shape]` (e.g. MNIST-1D `[B, 1, 40]`, MNIST `[B, 1, 28, 28]`, CIFAR
`[B, 3, 32, 32]`), outputs are logits `[B, num_classes]`.

Parameter names are regular so that permutation specs and pruning masks can address them:

- `mlp`, `lenet300_100`: `layers.{i}.weight|bias` (hidden Linear i), `norms.{i}.weight|bias`
  (only with a norm), `classifier.weight|bias`.
- `resnet20`: `stem.conv.weight`, `stem.norm.*`,
  `stages.{s}.blocks.{b}.conv1.weight`, `...norm1.*`, `...conv2.weight`, `...norm2.*`,
  `stages.{s}.blocks.{b}.shortcut.conv.weight`, `...shortcut.norm.*` (only where the shape
  changes), `classifier.weight|bias`.
- `vgg11`, `vgg16`: `convs.{i}.weight`, `norms.{i}.*`, `fcs.{0,1}.weight|bias`,
  `classifier.weight|bias`.

Convolutions carry a bias only when `norm == "none"` (with a norm the bias is redundant or
absorbed by the norm's affine shift); Linear layers always carry a bias.

Use `build_model(cfg, input_shape, num_classes)` to construct a model and `model_info(model)`
for the metadata (prunable weights, output layer, BatchNorm) derived from its structure.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from modeconn.config import ModelConfig
from modeconn.core.permutation import PermutationSpec

NORMS = ("none", "bn", "ln")


# ---------------------------------------------------------------------------------------------
# Normalisation layers
# ---------------------------------------------------------------------------------------------


class ChannelLayerNorm(nn.LayerNorm):
    """LayerNorm over the channel axis of `[B, C, H, W]`, at each spatial position.

    As in Git Re-Basin's ResNet (Ainsworth et al. 2023, which normalises the last axis of NHWC
    activations): the input is viewed channels-last, normalised over C with a per-channel
    affine weight and bias, and moved back. Parameters are `weight` and `bias`, shape `[C]`.
    """

    def __init__(self, num_channels: int):
        super().__init__(num_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1)


def make_norm(norm: str, num_features: int, spatial: bool) -> nn.Module:
    """The normalisation layer for `norm` (none | bn | ln) on `num_features` features/channels.

    `spatial=False` is for `[B, F]` activations (BatchNorm1d / LayerNorm), `spatial=True` for
    `[B, C, H, W]` (BatchNorm2d / ChannelLayerNorm). `none` gives `nn.Identity()`.
    """
    if norm == "none":
        return nn.Identity()
    if norm == "bn":
        return nn.BatchNorm2d(num_features) if spatial else nn.BatchNorm1d(num_features)
    if norm == "ln":
        return ChannelLayerNorm(num_features) if spatial else nn.LayerNorm(num_features)
    raise ValueError(f"model.norm: unknown normalisation {norm!r}; known: {', '.join(NORMS)}")


# ---------------------------------------------------------------------------------------------
# MLP and LeNet-300-100
# ---------------------------------------------------------------------------------------------


class MLP(nn.Module):
    """Fully connected ReLU network: flatten → [Linear → norm → ReLU] per hidden layer → Linear.

    LeNet-300-100 (LeCun et al. 1998; as used by Frankle & Carbin 2019) is `hidden=(300, 100)`.
    Input `[B, *input_shape]` is flattened to `[B, in_features]`; output `[B, num_classes]`.
    Modules: `layers.{i}` (Linear), `norms.{i}` (norm or Identity), `classifier` (Linear).
    """

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int, norm: str = "none"):
        super().__init__()
        widths = [in_features, *hidden]
        self.layers = nn.ModuleList(nn.Linear(widths[i], widths[i + 1]) for i in range(len(hidden)))
        self.norms = nn.ModuleList(make_norm(norm, w, spatial=False) for w in hidden)
        self.classifier = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for layer, norm in zip(self.layers, self.norms):
            x = F.relu(norm(layer(x)))
        return self.classifier(x)


def _norm_axes(prefix: str, norm: str, perm: str) -> dict[str, tuple[str | None, ...]]:
    """Spec entries of a norm layer: affine parameters and BN running statistics, all on `perm`."""
    if norm == "none":
        return {}
    names = ("weight", "bias") + (("running_mean", "running_var") if norm == "bn" else ())
    return {f"{prefix}.{n}": (perm,) for n in names}


def _repair_point(layer: str, norm_module: str, norm: str) -> tuple[tuple[str, str, str | None], ...]:
    """REPAIR rescales the pre-activation of a layer without BN: the biased layer itself (no norm)
    or the LayerNorm's affine output (ln); BN networks get their statistics reset instead."""
    if norm == "none":
        return ((layer, f"{layer}.weight", f"{layer}.bias"),)
    if norm == "ln":
        return ((norm_module, f"{norm_module}.weight", f"{norm_module}.bias"),)
    return ()


def mlp_permutation_spec(model: MLP) -> PermutationSpec:
    """MLP / LeNet-300-100: one permutation P{i} per hidden layer i (Ainsworth et al. 2023, Sec. 3).

    layers.i.weight: (P_i, P_{i-1}) (input axis unpermuted for i = 0), bias and norm tensors: (P_i,);
    classifier.weight: (None, P_last). P_i is observed after the ReLU that follows norms.i.
    """
    norm = _norm_name(model.norms[0]) if len(model.norms) else "none"
    axes: dict[str, tuple[str | None, ...]] = {}
    activations, repair = {}, ()
    prev = None
    for i in range(len(model.layers)):
        p = f"P{i}"
        axes[f"layers.{i}.weight"] = (p, prev)
        axes[f"layers.{i}.bias"] = (p,)
        axes |= _norm_axes(f"norms.{i}", norm, p)
        activations[p] = (f"norms.{i}",)
        repair += _repair_point(f"layers.{i}", f"norms.{i}", norm)
        prev = p
    axes["classifier.weight"] = (None, prev)
    axes["classifier.bias"] = (None,)
    return PermutationSpec(axes, activations, repair)


def _norm_name(module: nn.Module) -> str:
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return "bn"
    if isinstance(module, nn.LayerNorm):
        return "ln"
    return "none"


# ---------------------------------------------------------------------------------------------
# ResNet-20
# ---------------------------------------------------------------------------------------------


def conv3x3(in_channels: int, out_channels: int, stride: int, bias: bool) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)


class ConvNorm(nn.Module):
    """Convolution followed by a norm (no activation): modules `conv` and `norm`."""

    def __init__(self, conv: nn.Conv2d, norm: nn.Module):
        super().__init__()
        self.conv = conv
        self.norm = norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.conv(x))


class BasicBlock(nn.Module):
    """ResNet basic block: relu(norm2(conv2(relu(norm1(conv1(x))))) + shortcut(x)).

    `shortcut` is `nn.Identity()` when the shape is unchanged, otherwise a `ConvNorm` with a
    1x1 convolution of the block's stride (He et al. 2016's projection shortcut, option B; their
    CIFAR nets used zero-padding, option A, but the projection is what most later work uses).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, norm: str):
        super().__init__()
        bias = norm == "none"
        self.conv1 = conv3x3(in_channels, out_channels, stride, bias)
        self.norm1 = make_norm(norm, out_channels, spatial=True)
        self.conv2 = conv3x3(out_channels, out_channels, 1, bias)
        self.norm2 = make_norm(norm, out_channels, spatial=True)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = ConvNorm(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=bias),
                make_norm(norm, out_channels, spatial=True),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Stage(nn.Module):
    """A sequence of basic blocks (module `blocks`); the first block carries the stride."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, stride: int, norm: str):
        super().__init__()
        self.blocks = nn.ModuleList(
            BasicBlock(in_channels if b == 0 else out_channels, out_channels, stride if b == 0 else 1, norm)
            for b in range(num_blocks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return x


class ResNet20(nn.Module):
    """CIFAR ResNet-20 (He et al. 2016, Sec. 4.2) with a channel multiplier `w`.

    `[B, C, H, W]` → stem conv3x3 (16w) + norm + ReLU → 3 stages of 3 basic blocks with
    16w, 32w, 64w channels (stride 2 at the first block of `stages.1` and `stages.2`) → global
    average pool `[B, 64w]` → `classifier` Linear → `[B, num_classes]`. Spatial size is
    divided by 4 in total; any H, W >= 1 works (H, W >= 8 is the sensible range).
    About 0.27M parameters for w=1 with BatchNorm and 10 classes.
    """

    def __init__(self, in_channels: int, num_classes: int, width_multiplier: int = 1, norm: str = "none",
                 blocks_per_stage: int = 3):
        super().__init__()
        widths = [16 * width_multiplier, 32 * width_multiplier, 64 * width_multiplier]
        self.stem = ConvNorm(conv3x3(in_channels, widths[0], 1, bias=norm == "none"),
                             make_norm(norm, widths[0], spatial=True))
        self.stages = nn.ModuleList(
            Stage(widths[max(s - 1, 0)], widths[s], blocks_per_stage, 1 if s == 0 else 2, norm)
            for s in range(3)
        )
        self.classifier = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.stem(x))
        for stage in self.stages:
            x = stage(x)
        x = x.mean(dim=(-2, -1))
        return self.classifier(x)


def _conv_norm_axes(conv: str, norm_module: str, norm: str, out: str, inp: str | None, bias: bool) -> dict:
    axes: dict[str, tuple[str | None, ...]] = {f"{conv}.weight": (out, inp, None, None)}
    if bias:
        axes[f"{conv}.bias"] = (out,)
    return axes | _norm_axes(norm_module, norm, out)


def resnet20_permutation_spec(model: ResNet20) -> PermutationSpec:
    """ResNet-20: the residual stream of stage s shares ONE permutation `S{s}` (the identity
    shortcuts add it to itself, so every block's conv2/norm2, the projection shortcut that opens
    the stage and, for s = 0, the stem carry it); each block has its own inner permutation
    `S{s}B{b}` between conv1 and conv2 (Ainsworth et al. 2023, App. A.2). The classifier's input is S2.
    S{s} is observed at the ReLU outputs of the stem (s = 0) and of every block of the stage;
    S{s}B{b} after the ReLU that follows norm1.
    """
    norm = _norm_name(model.stem.norm)
    bias = norm == "none"
    axes = _conv_norm_axes("stem.conv", "stem.norm", norm, "S0", None, bias)
    activations: dict[str, tuple[str, ...]] = {"S0": ("stem",)}
    repair = _repair_point("stem.conv", "stem.norm", norm)
    stream = "S0"
    for s, stage in enumerate(model.stages):
        out = f"S{s}"
        for b, block in enumerate(stage.blocks):
            pre, inner = f"stages.{s}.blocks.{b}", f"S{s}B{b}"
            axes |= _conv_norm_axes(f"{pre}.conv1", f"{pre}.norm1", norm, inner, stream, bias)
            axes |= _conv_norm_axes(f"{pre}.conv2", f"{pre}.norm2", norm, out, inner, bias)
            repair += _repair_point(f"{pre}.conv1", f"{pre}.norm1", norm) + _repair_point(f"{pre}.conv2", f"{pre}.norm2", norm)
            if not isinstance(block.shortcut, nn.Identity):
                axes |= _conv_norm_axes(f"{pre}.shortcut.conv", f"{pre}.shortcut.norm", norm, out, stream, bias)
                repair += _repair_point(f"{pre}.shortcut.conv", f"{pre}.shortcut.norm", norm)
            activations[inner] = (f"{pre}.norm1",)
            activations[out] = activations.get(out, ()) + (pre,)
            stream = out
    axes["classifier.weight"] = (None, stream)
    axes["classifier.bias"] = (None,)
    return PermutationSpec(axes, activations, repair)


# ---------------------------------------------------------------------------------------------
# VGG
# ---------------------------------------------------------------------------------------------

# Simonyan & Zisserman 2015, configurations A (VGG11) and D (VGG16); "M" is a 2x2 max-pool.
VGG_CONFIGS: dict[str, tuple[int | str, ...]] = {
    "vgg11": (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"),
    "vgg16": (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"),
}


class VGG(nn.Module):
    """VGG (Simonyan & Zisserman 2015) in the CIFAR form of Garipov et al. 2018 (no dropout).

    `[B, C, H, W]` → for each conv: conv3x3 + norm + ReLU, with a 2x2 max-pool where the
    configuration has "M" → adaptive average pool to 1x1 → `[B, c_last]` → `fcs.0`
    Linear(c_last, c_last) + ReLU → `fcs.1` Linear(c_last, c_last) + ReLU → `classifier`
    Linear(c_last, num_classes). A max-pool is skipped when the spatial size (tracked at
    construction from `input_shape`) is already below 2, so 28x28 inputs work too;
    `pool_after[i]` records whether a pool follows `convs.{i}`.
    """

    def __init__(self, layers: Sequence[int | str], input_shape: Sequence[int], num_classes: int,
                 norm: str = "none"):
        super().__init__()
        in_channels, height, width = input_shape
        convs, norms, pool_after = [], [], []
        for item in layers:
            if item == "M":
                if not convs:
                    raise ValueError("VGG configuration must start with a convolution, not 'M'")
                if min(height, width) >= 2:
                    pool_after[-1] = True
                    height, width = height // 2, width // 2
                continue
            convs.append(conv3x3(in_channels, int(item), 1, bias=norm == "none"))
            norms.append(make_norm(norm, int(item), spatial=True))
            pool_after.append(False)
            in_channels = int(item)
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList(norms)
        self.pool_after: tuple[bool, ...] = tuple(pool_after)
        self.fcs = nn.ModuleList([nn.Linear(in_channels, in_channels), nn.Linear(in_channels, in_channels)])
        self.classifier = nn.Linear(in_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv, norm, pool in zip(self.convs, self.norms, self.pool_after):
            x = F.relu(norm(conv(x)))
            if pool:  # a constant fixed at construction, not data-dependent
                x = F.max_pool2d(x, 2)
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        for fc in self.fcs:
            x = F.relu(fc(x))
        return self.classifier(x)


def vgg_permutation_spec(model: VGG) -> PermutationSpec:
    """VGG: one permutation C{i} per convolution (weights, bias, norm) and F{j} per hidden fully
    connected layer; max-pooling and global average pooling act per channel, so they commute.
    C{i} is observed after the ReLU that follows norms.i, F{j} after the ReLU of fcs.j.
    """
    norm = _norm_name(model.norms[0])
    bias = norm == "none"
    axes: dict[str, tuple[str | None, ...]] = {}
    activations: dict[str, tuple[str, ...]] = {}
    repair: tuple = ()
    prev = None
    for i in range(len(model.convs)):
        p = f"C{i}"
        axes |= _conv_norm_axes(f"convs.{i}", f"norms.{i}", norm, p, prev, bias)
        activations[p] = (f"norms.{i}",)
        repair += _repair_point(f"convs.{i}", f"norms.{i}", norm)
        prev = p
    for j in range(len(model.fcs)):
        p = f"F{j}"
        axes[f"fcs.{j}.weight"] = (p, prev)
        axes[f"fcs.{j}.bias"] = (p,)
        activations[p] = (f"fcs.{j}",)
        # the fully connected layers carry no norm: REPAIR rescales them whenever no BN is used
        repair += () if norm == "bn" else ((f"fcs.{j}", f"fcs.{j}.weight", f"fcs.{j}.bias"),)
        prev = p
    axes["classifier.weight"] = (None, prev)
    axes["classifier.bias"] = (None,)
    return PermutationSpec(axes, activations, repair)


# ---------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------


def _image_shape(cfg: ModelConfig, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(input_shape) != 3:
        raise ValueError(
            f"model.name={cfg.name!r} needs image inputs of shape [C, H, W]; got input shape "
            f"{list(input_shape)} (use mlp or lenet300_100 for 1-D inputs such as MNIST-1D)"
        )
    return tuple(input_shape)  # type: ignore[return-value]


def _build_mlp(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return MLP(math.prod(input_shape), [cfg.width] * cfg.depth, num_classes, cfg.norm)


def _build_lenet300_100(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    return MLP(math.prod(input_shape), (300, 100), num_classes, cfg.norm)


def _build_resnet20(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    channels, _, _ = _image_shape(cfg, input_shape)
    return ResNet20(channels, num_classes, cfg.width_multiplier, cfg.norm)


def _vgg_builder(key: str) -> Callable[[ModelConfig, tuple[int, ...], int], nn.Module]:
    def build(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
        shape = _image_shape(cfg, input_shape)
        layers = [item if item == "M" else int(item) * cfg.width_multiplier for item in VGG_CONFIGS[key]]
        return VGG(layers, shape, num_classes, cfg.norm)

    build.__name__ = f"_build_{key}"
    return build


MODELS: dict[str, Callable[[ModelConfig, tuple[int, ...], int], nn.Module]] = {
    "mlp": _build_mlp,
    "lenet300_100": _build_lenet300_100,
    "resnet20": _build_resnet20,
    "vgg11": _vgg_builder("vgg11"),
    "vgg16": _vgg_builder("vgg16"),
}
# The model-section key that scales each model's width (what a width sweep varies); None: the
# architecture has fixed widths (LeNet-300-100 is defined by its 300 and 100 units).
WIDTH_KEYS: dict[str, str | None] = {
    "mlp": "width",
    "lenet300_100": None,
    "resnet20": "width_multiplier",
    "vgg11": "width_multiplier",
    "vgg16": "width_multiplier",
}


def width_key(name: str) -> str | None:
    """The model-section key that scales model `name`'s width, or None when its widths are fixed."""
    if name not in WIDTH_KEYS:
        raise ValueError(f"model.name: unknown model {name!r}; known: {', '.join(MODELS)}")
    return WIDTH_KEYS[name]


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Construct the registry model `cfg.name` for inputs `[B, *input_shape]` and `num_classes`.

    Initialisation is PyTorch's default, drawn from the global RNG: wrap the call in
    `torch.random.fork_rng()` + `torch.manual_seed(seed)` for a seeded, side-effect-free build.
    Raises ValueError for an unknown name or norm, or an input shape the architecture can't take.
    """
    if cfg.name not in MODELS:
        raise ValueError(f"model.name: unknown model {cfg.name!r}; known: {', '.join(MODELS)}")
    if cfg.norm not in NORMS:
        raise ValueError(f"model.norm: unknown normalisation {cfg.norm!r}; known: {', '.join(NORMS)}")
    input_shape = tuple(int(d) for d in input_shape)
    if not input_shape or any(d < 1 for d in input_shape):
        raise ValueError(f"model.name={cfg.name!r}: invalid input shape {list(input_shape)}")
    if num_classes < 1:
        raise ValueError(f"model.name={cfg.name!r}: num_classes must be >= 1, got {num_classes}")
    return MODELS[cfg.name](cfg, input_shape, num_classes)


@dataclass(frozen=True)
class ModelInfo:
    """Metadata of a model, derived from its module structure by `model_info`.

    prunable: names of every conv and linear `weight` (biases and norm parameters excluded),
        output layer included, in `named_parameters()` order.
    output_layer: parameter-name prefix of the classifier layer (`f"{output_layer}.weight"`
        exists); the last nn.Linear in registration order.
    has_batchnorm: whether any BatchNorm layer is present.
    """

    prunable: tuple[str, ...]
    output_layer: str
    has_batchnorm: bool


_WEIGHTED = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCHNORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def model_info(model: nn.Module) -> ModelInfo:
    """Walk `model`'s modules and return its `ModelInfo`."""
    prunable: list[str] = []
    linears: list[str] = []
    has_batchnorm = False
    for name, module in model.named_modules():
        if isinstance(module, _WEIGHTED):
            prunable.append(f"{name}.weight" if name else "weight")
            if isinstance(module, nn.Linear):
                linears.append(name)
        if isinstance(module, _BATCHNORMS):
            has_batchnorm = True
    if not linears:
        raise ValueError(f"{type(model).__name__} has no nn.Linear output layer")
    return ModelInfo(prunable=tuple(prunable), output_layer=linears[-1], has_batchnorm=has_batchnorm)


# Permutation symmetries of each architecture, as data (core/permutation.py applies them).
PERMUTATION_SPECS: dict[type, Callable[[nn.Module], PermutationSpec]] = {
    MLP: mlp_permutation_spec,
    ResNet20: resnet20_permutation_spec,
    VGG: vgg_permutation_spec,
}


def permutation_spec(model: nn.Module) -> PermutationSpec:
    """The `PermutationSpec` of a registry model (which permutation acts on which tensor axis)."""
    for cls, spec in PERMUTATION_SPECS.items():
        if isinstance(model, cls):
            return spec(model)
    raise ValueError(f"no permutation spec for {type(model).__name__}")
