"""The model zoo: every config builds, runs and trains; counts, custom conv and freezing are exact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from hydra.utils import execution_whitelist, instantiate
from torch import nn

from common.errors import ConfigError
from models import model_cost
from models.cnn5 import CNN5
from models.custom_conv import Conv2d as CustomConv2d
from models.custom_conv import unfold_conv2d
from models.finetune import FineTuneResNet
from models.resnet import VARIANTS, ResNet
from runner.config.schema import TRUSTED_TARGETS
from runner.profile import main as profile_main
from runner.run.train import train

CONF_MODELS = Path(__file__).resolve().parents[1] / "conf" / "model"

# Each model config with the data set it declares it supports: the built-in digits (1x32x32).
MODEL_DATA: dict[str, list[str]] = {
    "lenet": [],
    "cnn5": [],
    "custom_conv": [],
    "resnet50": [],
    "resnet18_finetune": ["model.pretrained=false"],
    "simplenet": [],
    "simplevit": [],
}


def build(cfg) -> nn.Module:
    with execution_whitelist(TRUSTED_TARGETS):
        return instantiate(cfg.model)


def test_every_model_config_is_tested():
    assert sorted(p.stem for p in CONF_MODELS.glob("*.yaml")) == sorted(MODEL_DATA)


@pytest.mark.parametrize("name", sorted(MODEL_DATA))
def test_model_config_runs_forward_and_backward_on_its_data(make_cfg, name):
    cfg = make_cfg(f"model={name}", *MODEL_DATA[name])
    d = cfg.dataset
    torch.manual_seed(0)
    x = torch.randn(8, d.channels, d.image_size, d.image_size)  # a normalised batch shaped like its data
    model = build(cfg)

    logits = model(x)
    F.cross_entropy(logits, torch.arange(8) % d.num_classes).backward()

    assert logits.shape == (8, d.num_classes)
    for pname, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name", sorted(MODEL_DATA))
def test_model_config_trains_one_short_run(make_cfg, tmp_path, tiny_images, name):
    cfg = make_cfg(f"model={name}", *MODEL_DATA[name], *tiny_images, "epochs=1", "device=cpu", "progress=false")
    summary = train(cfg, tmp_path)
    assert summary["status"] == "completed"
    assert summary["params_m"] > 0 and summary["best_val_acc"] is not None


def test_finetune_experiment_decodes_images_at_the_backbones_224px(make_cfg):
    cfg = make_cfg("experiment=finetune_resnet18", "model.pretrained=false")
    assert cfg.dataset.image_size == 224 and cfg.model.image_size == 224
    assert cfg.model._target_ == "models.finetune.FineTuneResNet" and cfg.model.freeze == "all_but_head"
    model = build(cfg)
    logits = model(torch.randn(2, cfg.dataset.channels, 224, 224))
    F.cross_entropy(logits, torch.tensor([0, 1])).backward()
    assert logits.shape == (2, 10) and model.backbone.fc.weight.grad is not None


# ---------------------------------------------------------------- parameter and MAC counts
def cnn5_closed_form(c: int, m: int, k: int, n: int, size: int, classes: int) -> tuple[int, int]:
    """Parameters and MACs of the 5-block CNN: m filters of k x k per block, same padding, n dense units."""
    sides = [size // 2**i for i in range(5)]  # each block's conv runs at this side, then halves it
    final = size // 2**5
    params = (k * k * c * m + m) + 4 * (k * k * m * m + m) + (m * final**2 * n + n) + (n * classes + classes)
    macs = (k * k * c * m * sides[0] ** 2 + sum(k * k * m * m * s**2 for s in sides[1:])
            + m * final**2 * n + n * classes)
    return params, macs


@pytest.mark.parametrize("c, m, k, n, size", [(3, 32, 3, 128, 224), (1, 16, 5, 64, 32), (3, 8, 7, 10, 64)])
def test_cnn5_parameters_and_macs_match_the_closed_form(c, m, k, n, size):
    model = CNN5(in_channels=c, image_size=size, num_classes=10, filters=m, kernel_size=k, dense_units=n)
    params, macs = cnn5_closed_form(c, m, k, n, size, 10)
    cost = model_cost(model, c, size)
    assert (cost.params, cost.macs) == (params, macs)
    assert cost.trainable == params


def test_cnn5_batch_norm_replaces_conv_biases_with_scale_and_shift():
    plain = model_cost(CNN5(3, 64, 10, filters=16), 3, 64)
    normed = model_cost(CNN5(3, 64, 10, filters=16, batch_norm=True), 3, 64)
    assert normed.params - plain.params == 5 * 16  # +2m per block (gamma, beta), -m (conv bias)
    assert normed.macs == plain.macs


@pytest.mark.parametrize("organisation, expected", [("same", [16] * 5), ("double", [16, 32, 64, 128, 256]),
                                                    ("half", [16, 8, 4, 2, 1])])
def test_cnn5_filter_organisation(organisation, expected):
    model = CNN5(3, 32, 10, filters=16, filter_organisation=organisation)
    assert [block[0].out_channels for block in model.features] == expected


@pytest.mark.parametrize("size", [32, 100, 224])
def test_cnn5_runs_at_any_size_from_32_to_224(size):
    model = CNN5(3, size, 7, filters=4, activation="mish", batch_norm=True, dropout=0.2, dropout_at="all")
    assert model(torch.randn(2, 3, size, size)).shape == (2, 7)


def test_cnn5_refuses_a_padding_that_shrinks_the_image_away():
    with pytest.raises(ConfigError, match="model.padding=same"):
        CNN5(3, 32, 10, kernel_size=5, padding=0)


@pytest.mark.parametrize("depth", sorted(VARIANTS))
def test_resnet_variants_match_torchvision_parameter_counts(depth):
    with torch.device("meta"):  # shapes only: no memory, no init time
        ours = ResNet(in_channels=3, num_classes=10, depth=depth)
        theirs = torchvision.models.get_model(f"resnet{depth}", weights=None, num_classes=10)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in theirs.parameters())


def test_resnet50_is_torchvisions_resnet50_layer_for_layer():
    torch.manual_seed(0)
    theirs = torchvision.models.resnet50(num_classes=10).eval()
    ours = ResNet(in_channels=3, num_classes=10, depth=50).eval()
    ours.load_state_dict(theirs.state_dict())  # same names, same shapes, nothing left over
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))
    assert sum(p.numel() for p in ours.parameters()) == 23_528_522  # 25,557,032 with 1,000 classes


# ---------------------------------------------------------------- the custom convolution
CONV_CASES = [  # (in, out, kernel, stride, padding, dilation)
    (3, 4, 3, 1, 1, 1),
    (2, 5, 5, 2, 2, 1),
    (1, 3, 2, 3, 0, 1),
    (4, 2, 3, 2, 1, 2),
    (3, 2, (3, 1), (2, 1), (0, 1), 1),
    (2, 3, 1, 1, 0, 1),
]


@pytest.mark.parametrize("c_in, c_out, k, stride, padding, dilation", CONV_CASES)
def test_custom_conv_forward_and_gradients_match_conv2d(c_in, c_out, k, stride, padding, dilation):
    torch.manual_seed(0)
    kh, kw = (k, k) if isinstance(k, int) else k
    x = torch.randn(2, c_in, 9, 8, requires_grad=True)
    w = torch.randn(c_out, c_in, kh, kw, requires_grad=True)
    b = torch.randn(c_out, requires_grad=True)
    ours = unfold_conv2d(x, w, b, stride, padding, dilation)
    ref = F.conv2d(x, w, b, stride, padding, dilation)
    torch.testing.assert_close(ours, ref)
    g = torch.randn_like(ref)
    ours_grads = torch.autograd.grad(ours, (x, w, b), g)
    ref_grads = torch.autograd.grad(ref, (x, w, b), g)
    for a, r in zip(ours_grads, ref_grads):
        torch.testing.assert_close(a, r)


@pytest.mark.parametrize("c_in, c_out, k, stride, padding, dilation", CONV_CASES)
def test_custom_conv_passes_gradcheck_in_double(c_in, c_out, k, stride, padding, dilation):
    torch.manual_seed(0)
    kh, kw = (k, k) if isinstance(k, int) else k
    x = torch.randn(1, c_in, 7, 6, dtype=torch.double, requires_grad=True)
    w = torch.randn(c_out, c_in, kh, kw, dtype=torch.double, requires_grad=True)
    b = torch.randn(c_out, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: unfold_conv2d(*t, stride, padding, dilation), (x, w, b))
    assert torch.autograd.gradcheck(lambda x, w: unfold_conv2d(x, w, None, stride, padding, dilation), (x, w))


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # PyTorch's own, for kernel 4
@pytest.mark.parametrize("kernel", [3, 4])
def test_custom_conv_module_is_nn_conv2d_with_same_padding_too(kernel):
    ours = CustomConv2d(3, 4, kernel, padding="same")
    ref = nn.Conv2d(3, 4, kernel, padding="same")
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(2, 3, 7, 7)
    torch.testing.assert_close(ours(x), ref(x))


@pytest.mark.parametrize("name", ["cnn5", "resnet50", "simplenet", "simplevit"])
def test_conv_impl_custom_swaps_the_convolutions_and_keeps_the_function(make_cfg, name):
    torch.manual_seed(0)
    cfg = make_cfg(f"model={name}", "dataset.image_size=32")
    reference = build(cfg).eval()
    cfg.model.conv_impl = "custom"
    custom = build(cfg).eval()
    custom.load_state_dict(reference.state_dict())
    convs = [m for m in custom.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(isinstance(m, CustomConv2d) for m in convs)
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(custom(x), reference(x), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- fine-tuning
def trainable_stages(model: FineTuneResNet) -> set[str]:
    names = {n.split(".")[1] for n, p in model.named_parameters() if p.requires_grad}
    return {"stem" if n in ("conv1", "bn1") else n for n in names}


@pytest.mark.parametrize("freeze, k, expected", [
    ("all_but_head", 3, {"fc"}),
    ("first_k", 0, {"stem", "layer1", "layer2", "layer3", "layer4", "fc"}),
    ("first_k", 2, {"layer2", "layer3", "layer4", "fc"}),
    ("first_k", 5, {"fc"}),
    ("none", 3, {"stem", "layer1", "layer2", "layer3", "layer4", "fc"}),
])
def test_freeze_strategies_leave_the_right_parameters_trainable(freeze, k, expected):
    model = FineTuneResNet(3, 32, 7, pretrained=False, freeze=freeze, freeze_k=k)
    assert trainable_stages(model) == expected
    model.train()
    frozen_bn = [m for stage in model.stages() for m in stage.modules()
                 if isinstance(m, nn.BatchNorm2d) and not m.weight.requires_grad]
    assert all(not m.training for m in frozen_bn)  # frozen stages keep their statistics
    assert model.backbone.fc.training and model.backbone.fc.out_features == 7


def test_freeze_k_out_of_range_is_a_config_error():
    with pytest.raises(ConfigError, match="model.freeze_k"):
        FineTuneResNet(3, 32, 7, pretrained=False, freeze="first_k", freeze_k=6)


def test_finetune_loads_weights_from_a_local_file_and_replaces_the_head(tmp_path):
    torch.manual_seed(0)
    source = torchvision.models.resnet18()  # stands in for the ImageNet file, 1000-class head and all
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)

    model = FineTuneResNet(3, 32, 5, weights_path=str(path))
    torch.testing.assert_close(model.backbone.layer3[0].conv1.weight, source.layer3[0].conv1.weight)
    assert model.backbone.fc.out_features == 5

    grey = FineTuneResNet(1, 32, 5, weights_path=str(path))
    torch.testing.assert_close(grey.backbone.conv1.weight, source.conv1.weight.sum(1, keepdim=True))


def test_finetune_offline_names_weights_path_as_the_fix(monkeypatch):
    def offline(self, *args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", offline)
    with pytest.raises(ConfigError, match="model.weights_path=") as err:
        FineTuneResNet(3, 224, 10, pretrained=True)
    assert "\n" not in str(err.value)


def test_profile_cli_prints_parameters_and_macs(capsys):
    profile_main(["model=cnn5", "model.filters=8", "model.dense_units=16"])
    out = capsys.readouterr().out
    params, macs = cnn5_closed_form(1, 8, 3, 16, 32, 10)
    assert f"{params:,} parameters" in out and f"{macs:,} MACs" in out
