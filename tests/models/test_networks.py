import pytest
import torch
from torch import nn

from models.networks import (
    ARCHITECTURES,
    CNN,
    MLP,
    build_model,
    class_probabilities,
    count_parameters,
    prepare_for_inference,
    to_channels_last,
)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("batch", [1, 5])
def test_every_arch_maps_images_to_ten_logits(arch: str, batch: int) -> None:
    model = build_model(arch).eval()
    with torch.no_grad():
        out = model(torch.randn(batch, 1, 28, 28))
    assert out.shape == (batch, 10)


def test_mlp_is_the_tutorial_network_without_the_final_relu() -> None:
    layers = list(MLP().linear_relu_stack)
    assert [type(layer) for layer in layers] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert [(layer.in_features, layer.out_features) for layer in layers if isinstance(layer, nn.Linear)] == [
        (784, 512),
        (512, 512),
        (512, 10),
    ]
    # Logits may be negative: no ReLU clips them.
    torch.manual_seed(0)
    assert (MLP()(torch.randn(64, 1, 28, 28)) < 0).any()


def test_cnn_fits_the_serving_budget_in_size() -> None:
    # The shipped model must stay under 10 MB: float32 weights are 4 bytes each.
    assert count_parameters(CNN()) * 4 < 10_000_000


def test_fused_cnn_gives_the_same_logits() -> None:
    torch.manual_seed(0)
    model = CNN()
    # Train-mode passes give the batch-norm layers non-trivial running statistics.
    model.train()
    for _ in range(3):
        model(torch.randn(32, 1, 28, 28) * 2 + 0.5)
    model.eval()
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        before = model(x)
        after = model.fuse_for_inference()(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)


def test_fusing_in_train_mode_is_refused() -> None:
    with pytest.raises(RuntimeError, match="eval mode"):
        CNN().fuse_for_inference()


def test_unknown_arch_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown architecture 'resnet'; valid: cnn, mlp"):
        build_model("resnet")


def test_model_args_reach_the_network() -> None:
    model = build_model("cnn", widths=(4, 8), pools_after=(0,), num_classes=3)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 3)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_the_served_form_gives_the_same_logits_from_channels_last_weights(arch: str) -> None:
    torch.manual_seed(0)
    model = build_model(arch)
    model.train()
    for _ in range(3):  # non-trivial batch-norm statistics
        model(torch.randn(32, 1, 28, 28) * 2 + 0.5)
    model.eval()
    x = torch.randn(8, 1, 28, 28)
    with torch.no_grad():
        before = model(x)
        served = prepare_for_inference(model)
        after = served(to_channels_last(x))
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4)
    assert not served.training
    for weight in served.parameters():
        if weight.dim() == 4:
            assert weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize(("head_pool", "features"), [(1, 96), (3, 96 * 9), (7, 96 * 49)])
def test_the_head_pools_the_last_feature_map_to_the_asked_grid(head_pool: int, features: int) -> None:
    model = CNN(head_pool=head_pool)
    linear = model.head[-1]
    assert isinstance(linear, nn.Linear) and linear.in_features == features
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_flip_average_is_the_mean_of_the_image_and_its_mirror_one_image_at_a_time() -> None:
    torch.manual_seed(0)
    model = prepare_for_inference(build_model("cnn", widths=(4, 8), pools_after=(0,), head_pool=1))
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        plain = class_probabilities(model, x)
        averaged = class_probabilities(model, x, flip_average=True)
        mirrored = class_probabilities(model, x.flip(-1))
        alone = torch.cat([class_probabilities(model, x[i : i + 1], flip_average=True) for i in range(5)])
    torch.testing.assert_close(plain, model(x).softmax(1))
    torch.testing.assert_close(averaged, (plain + mirrored) / 2)
    torch.testing.assert_close(averaged.sum(1), torch.ones(5))
    # Each image's answer is its own: it does not depend on the rest of the batch.
    torch.testing.assert_close(alone, averaged, atol=1e-6, rtol=1e-5)
    assert not torch.allclose(averaged, plain)  # a random net is not mirror-symmetric
