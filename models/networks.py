"""Network definitions and the architecture registry used by training and serving."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from models.calibration import view_probabilities


class MLP(nn.Module):
    """The PyTorch quickstart tutorial's network, without the ReLU after the last layer.

    The older tutorial text ends with a ReLU, which clips the logits at zero and costs
    about 11 points of test accuracy after its 5 epochs; we leave it out.
    """

    def __init__(self, num_classes: int = 10, hidden: int = 512) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        # Same attribute name as the tutorial, so its bare state dict loads unchanged.
        self.linear_relu_stack = nn.Sequential(
            nn.Linear(28 * 28, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_relu_stack(self.flatten(x))

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits, and the last hidden layer's activations (what the out-of-distribution
        score measures)."""
        hidden = self.linear_relu_stack[:-1](self.flatten(x))
        return self.linear_relu_stack[-1](hidden), hidden


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    # bias=False: batch norm's shift makes a conv bias redundant.
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


# How many of a CNN's last conv blocks the out-of-distribution score reads (logits_and_features).
FEATURE_BLOCKS = 3


class CNN(nn.Module):
    """A small VGG-style network: stages of 3x3 conv-BN-ReLU, each ending in a 2x2 max pool.

    ``widths`` gives one entry per conv; ``pools_after`` the indices of the convs that
    are followed by a pool. The head average-pools the last feature map to
    ``head_pool`` x ``head_pool`` cells (1: global average pooling), then dropout and one
    linear layer: it keeps the parameter count small and the cost dominated by the convs.
    A head that keeps some layout (where the collar or the sleeves are) is what tells a
    shirt from a T-shirt.
    """

    def __init__(
        self,
        num_classes: int = 10,
        widths: Sequence[int] = (24, 48, 48, 96, 96),
        pools_after: Sequence[int] = (0, 2),
        dropout: float = 0.1,
        head_pool: int = 1,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_channels = 1
        for index, width in enumerate(widths):
            layers.append(_conv_bn_relu(in_channels, width))
            if index in pools_after:
                layers.append(nn.MaxPool2d(2))
            in_channels = width
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(head_pool),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(in_channels * head_pool * head_pool, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def logits_and_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The logits, and the last three conv blocks' activations summed per channel, concatenated.

        Middle blocks see strokes and textures, the last ones shapes: a digit or a photo
        looks unlike clothing at one depth or another, so the out-of-distribution score
        measures several (the first two blocks added nothing measurable to it, and cost time
        on every image). Sums rather than means: the score is blind to each feature's scale,
        and a sum is one tensor operation, a mean three.
        """
        blocks = [i for i, layer in enumerate(self.features) if isinstance(layer, nn.Sequential)]
        scored = set(blocks[-FEATURE_BLOCKS:])
        pooled = []
        for index, layer in enumerate(self.features):
            x = layer(x)
            if index in scored:
                pooled.append(x.sum((2, 3)))
        return self.head(x), torch.cat(pooled, 1)

    @torch.no_grad()
    def fuse_for_inference(self) -> CNN:
        """Fold each batch norm into the conv before it (eval mode only); returns self."""
        if self.training:
            raise RuntimeError("fuse_for_inference() needs eval mode: call model.eval() first")
        for block in self.features:
            if not isinstance(block, nn.Sequential):
                continue
            conv, bn = block[0], block[1]
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                block[0] = fuse_conv_bn_eval(conv, bn)
                block[1] = nn.Identity()
        return self


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"mlp": MLP, "cnn": CNN}
DEFAULT_ARCH = "cnn"


def build_model(arch: str, **model_args: object) -> nn.Module:
    """Build an untrained network of a registered architecture."""
    try:
        factory = ARCHITECTURES[arch]
    except KeyError:
        valid = ", ".join(sorted(ARCHITECTURES))
        raise ValueError(f"unknown architecture {arch!r}; valid: {valid}") from None
    return factory(**model_args)


def prepare_for_inference(model: nn.Module, temperature: float = 1.0) -> nn.Module:
    """Eval mode, batch norm folded (a CNN), weights in channels-last layout; returns the model.

    What the server runs. Channels-last lets oneDNN pick its fast convolution kernels on
    the CPU: measured on one thread of this project's 2-core machine, the default CNN went
    from about 1,160 to 2,250 images/s at batch 32. Feed it ``to_channels_last(x)``.
    A calibration ``temperature`` is folded into the last layer, as batch norm into the
    convs: its logits come out already divided by it, for no work per image.
    """
    model.eval()
    if isinstance(model, CNN):
        model.fuse_for_inference()
    if temperature != 1.0:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        last = linears[-1] if isinstance(model, CNN | MLP) and linears else None
        if last is None or last.bias is None:
            raise TypeError(f"{type(model).__name__} does not end in a linear layer")
        with torch.no_grad():
            last.weight.div_(temperature)
            last.bias.div_(temperature)
    return model.to(memory_format=torch.channels_last)


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    """A 4-D batch in the layout ``prepare_for_inference`` models run fastest on."""
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 else x


def class_probabilities(
    model: nn.Module, x: torch.Tensor, flip_average: bool = False, temperature: float = 1.0
) -> torch.Tensor:
    """Softmax over the classes for a normalised N x C x H x W batch, as float32.

    With ``flip_average``, each image's probabilities are the mean of its own and its
    mirror image's (test-time augmentation): both go through one forward pass of 2N, so
    the result for an image never depends on what else is in the batch. It pays for
    networks trained with mirrored images (``--hflip``). ``temperature`` divides the logits
    first (``models.calibration``).
    """
    n = x.shape[0]
    if flip_average:
        x = torch.cat([x, x.flip(-1)])
    logits = model(to_channels_last(x)).float()
    return view_probabilities(logits.view(2 if flip_average else 1, n, -1), temperature)


def logits_and_features(
    model: nn.Module, x: torch.Tensor, flip_average: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits per view (V x N x C, V = 2 with ``flip_average``: each image and its mirror, in
    one pass of 2N) and the features averaged over the views (N x D), as float32."""
    n = x.shape[0]
    if flip_average:
        x = torch.cat([x, x.flip(-1)])
    if not isinstance(model, CNN | MLP):
        raise TypeError(f"{type(model).__name__} has no logits_and_features")
    logits, features = model.logits_and_features(to_channels_last(x))
    views = 2 if flip_average else 1
    return logits.float().view(views, n, -1), features.float().view(views, n, -1).mean(0)


def has_features(model: nn.Module) -> bool:
    """Whether ``logits_and_features`` can score the network's features."""
    return isinstance(model, CNN | MLP)


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (weights and biases, not buffers)."""
    return sum(p.numel() for p in model.parameters())
