"""`python -m runner.analyze` and runner/run/attacks.py on a LeNet trained once on digits (3 epochs)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hydra import compose, initialize_config_dir
from PIL import Image
from torch import nn

from common.errors import ConfigError
from runner.analyze import compute
from runner.analyze.__main__ import main as analyze_main
from runner.analyze.figures import DPI, grid_size
from runner.analyze.views import View, filters
from runner.eval import restore
from runner.run.attacks import Attack, pgd, robust_accuracy
from runner.run.epoch import evaluate
from runner.run.train import train
from tests.conftest import CONF_DIR, run_cli


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    run_dir = tmp_path_factory.mktemp("lenet_digits")
    with initialize_config_dir(config_dir=CONF_DIR):
        cfg = compose(config_name="config",
                      overrides=["epochs=3", "tensorboard=false", "progress=false", "compute.threads=1"])
    assert train(cfg, run_dir)["status"] == "completed"
    return run_dir / "model_best.pth.tar"


@pytest.fixture(scope="module")
def run(checkpoint):
    return restore(str(checkpoint), "cpu")


def attacked_accuracy(run, epsilon: float, steps: int, random_start: bool = False) -> float:
    """Accuracy on the first 160 validation images under the attack (fewer images: a faster test)."""
    torch.manual_seed(0)
    batches = run.splits["val"].batches(160, shuffle=False, device=run.device)
    return robust_accuracy(run.model, [next(batches)], run.normalize, Attack(epsilon, steps, None, random_start))


def analyze(*args: str) -> int:
    return analyze_main(list(args))


def test_pgd_at_epsilon_zero_is_clean_accuracy_and_accuracy_falls_with_epsilon(run, checkpoint, tmp_path):
    clean = evaluate(run.model, run.splits["val"], run.normalize)["val_acc"]
    assert analyze(f"checkpoint={checkpoint}", "what=pgd", "eps=0,2/255,0.05,0.1,0.2", "steps=3",
                   f"out={tmp_path}") == 0
    table = pd.read_csv(tmp_path / "pgd.csv")
    assert table["epsilon"].iloc[0] == 0 and table["accuracy"].iloc[0] == clean  # exactly, not approximately
    assert (table["accuracy"].diff().dropna() <= 0).all(), table
    assert table["accuracy"].iloc[-1] < clean - 30  # the attack does something
    assert (table["images"] == len(run.splits["val"].labels)).all()


def test_pgd_is_at_least_as_strong_as_fgsm(run):
    for epsilon in (0.03, 0.1):
        fgsm = attacked_accuracy(run, epsilon, steps=1)
        assert attacked_accuracy(run, epsilon, steps=5) <= fgsm
    assert attacked_accuracy(run, 0.1, steps=5, random_start=True) <= attacked_accuracy(run, 0.1, steps=1)


def test_attacked_images_stay_in_the_ball_and_the_pixel_range(run):
    x, y = next(run.splits["val"].batches(64, shuffle=False, device=run.device))
    adversarial = pgd(run.model.eval(), run.normalize, x, y, Attack(epsilon=8 / 255, steps=3))
    assert (adversarial - x.float()).abs().max() <= 8 + 1e-4
    assert adversarial.min() >= 0 and adversarial.max() <= 255


class LeftHalfBlind(nn.Module):
    """A model that never sees the left half of the image: its gradient there is exactly zero."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.ones_like(x)
        mask[..., : x.shape[-1] // 2] = 0
        return self.model(x * mask)


def test_saliency_has_the_image_shape_and_is_zero_exactly_where_the_gradient_is(run):
    images = compute.images_at(run.splits["val"], range(6))
    labels = run.splits["val"].labels[:6]
    model = LeftHalfBlind(run.model).eval()
    maps = compute.saliency(model, run.normalize, images, labels)
    assert maps.shape == (6, *images.shape[-2:])
    grad = compute.input_gradient(model, run.normalize, images.float() / 255, labels)
    assert torch.equal(maps == 0, (grad == 0).all(dim=1))
    assert (maps[..., :16] == 0).all() and (maps[..., 16:] > 0).float().mean() > 0.5
    smooth = compute.smoothgrad(model, run.normalize, images, labels, samples=4)
    assert smooth.shape == maps.shape and (smooth[..., :16] == 0).all()


def test_predictions_mark_exactly_the_misclassified_images(run, checkpoint, tmp_path):
    assert analyze(f"checkpoint={checkpoint}", "what=predictions", "n=120", f"out={tmp_path}") == 0
    shown = pd.read_csv(tmp_path / "predictions.csv")
    assert len(shown) == 120 and shown["index"].is_unique
    logits = run.model.eval()(run.normalize(compute.images_at(run.splits["val"], shown["index"].tolist())))
    truth = run.splits["val"].labels[torch.tensor(shown["index"].values)]
    assert shown["pred"].tolist() == logits.argmax(1).tolist()
    assert shown["true"].tolist() == truth.tolist()
    assert shown["wrong"].tolist() == (logits.argmax(1) != truth).tolist()
    assert shown["wrong"].any() and not shown["wrong"].all()
    mistakes = pd.read_csv(tmp_path / "mistakes.csv")
    assert len(mistakes) == 5 and (mistakes["true"] != mistakes["pred"]).all()
    assert mistakes["confidence"].is_monotonic_decreasing


def test_confusion_matrix_and_per_class_accuracy_agree_with_eval(run, checkpoint, tmp_path):
    assert analyze(f"checkpoint={checkpoint}", "what=confusion", f"out={tmp_path}") == 0
    per_class = pd.read_csv(tmp_path / "per_class_accuracy.csv", dtype={"name": str})
    counts = pd.read_csv(tmp_path / "confusion_counts.csv", index_col=0)
    assert per_class["accuracy"].is_monotonic_decreasing
    assert sorted(per_class["name"]) == [str(d) for d in range(10)]
    clean = evaluate(run.model, run.splits["val"], run.normalize)["val_acc"]
    assert 100 * per_class["correct"].sum() / per_class["images"].sum() == pytest.approx(clean)
    assert counts.values.sum() == len(run.splits["val"].labels)


def test_every_picture_opens_at_its_expected_size(checkpoint, tmp_path):
    for what in ("predictions", "confusion", "filters", "saliency", "pgd"):
        assert analyze(f"checkpoint={checkpoint}", f"what={what}", "eps=0,0.1", "steps=2", "images=64",
                       "smoothgrad=true", "samples=2", f"out={tmp_path}") == 0
    expected = {"predictions.png": grid_size(3, 10), "mistakes.png": grid_size(1, 5),
                "filters.png": grid_size(1, 6), "activations.png": grid_size(2, 17),
                "saliency.png": grid_size(3, 8), "pgd_examples.png": grid_size(3, 10),
                "pgd_accuracy.png": (5 * DPI, round(3.5 * DPI)), "confusion.png": (5 * DPI, 5 * DPI)}
    written = sorted(p.name for p in tmp_path.glob("*.png"))
    assert written == sorted(expected)
    for name, size in expected.items():
        with Image.open(tmp_path / name) as image:
            image.verify()
        with Image.open(tmp_path / name) as image:
            assert image.size == size, name
            assert len(np.unique(np.asarray(image.convert("L")))) > 10, f"{name} looks blank"


def test_filters_refuse_a_model_without_convolution(run, tmp_path):
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(32 * 32, 10))
    view = View(dataclasses.replace(run, model=mlp), run.splits["val"], "val", [], {"image": 0}, tmp_path)
    with pytest.raises(ConfigError, match="what=filters needs a model with a convolution"):
        filters(view)


@pytest.mark.parametrize("args, needle", [
    (["what=weights"], "what=weights is not something to look at"),
    (["what=pgd", "eps=0,2"], "eps=2 is outside [0, 1]"),
    (["what=pgd", "eps=-0.1"], "eps=-0.1 is outside [0, 1]"),
    (["what=pgd", "alpha=0"], "alpha=0 is invalid"),
    (["what=saliency", "n=0"], "n=0 is too small"),
    (["what=predictions", "split=test"], "split=test does not exist"),
])
def test_bad_input_is_one_line(checkpoint, capsys, args, needle):
    assert analyze(f"checkpoint={checkpoint}", *args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ") and needle in err, err


def test_a_file_that_is_not_a_checkpoint_is_refused_by_the_command(tmp_path):
    junk = tmp_path / "junk.pth.tar"
    junk.write_bytes(b"not a checkpoint")
    proc = run_cli(f"checkpoint={junk}", "what=confusion", module="runner.analyze")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: checkpoint={junk} is not a readable checkpoint")


def test_class_names_come_from_the_data_sets(tmp_path):
    from data.miniplaces import MiniPlaces
    from data.torchvision_sets import ImageFolder
    from tests.conftest import write_image_folder, write_miniplaces

    places = MiniPlaces(root=str(write_miniplaces(tmp_path / "places", size=16)))
    assert places.class_names() == ["abbey", "bakery_shop", "canyon"]
    folder = ImageFolder(root=str(write_image_folder(tmp_path / "folder", classes=3, per_class=2)))
    assert folder.class_names() == ["class0", "class1", "class2"]


def test_a_hundred_class_confusion_matrix_names_every_class_on_both_axes():
    """MiniPlaces has 100 classes: the rows and columns carry their names (sorted by accuracy,
    a rank position says nothing), however many classes there are."""
    from runner.analyze.figures import confusion_plot

    names = [f"scene_{i:03d}" for i in range(100)][::-1]
    fig = confusion_plot(np.eye(100), names, "val")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert 3.0 <= ax.get_yticklabels()[0].get_fontsize() <= 7.0
