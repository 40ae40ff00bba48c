import torch

from models import count_model_params
from models.lenet import LeNet


def test_lenet_shapes_match_the_course_spec():
    model = LeNet(in_channels=3, image_size=32, num_classes=100)
    logits, shapes = model(torch.randn(4, 3, 32, 32))
    assert logits.shape == (4, 100)
    assert shapes == {1: [4, 6, 14, 14], 2: [4, 16, 5, 5], 3: [4, 400], 4: [4, 256], 5: [4, 128], 6: [4, 100]}


def test_lenet_parameter_count_is_unrounded_millions():
    assert count_model_params(LeNet(3, 32, 100)) == 0.151324


def test_lenet_layers_have_biases_and_training_mode_returns_logits_only():
    model = LeNet(1, 32, 10, return_shapes=False)
    assert all(m.bias is not None for m in model.modules() if hasattr(m, "bias") and hasattr(m, "weight"))
    out = model(torch.randn(2, 1, 32, 32))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 10)


def test_lenet_adapts_to_image_size_and_channels():
    model = LeNet(in_channels=1, image_size=28, num_classes=10)
    _, shapes = model(torch.randn(2, 1, 28, 28))
    assert shapes[3] == [2, 16 * 4 * 4]
