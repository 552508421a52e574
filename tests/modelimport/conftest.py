"""Models nobody here wrote, made inside the tests: a scikit-learn pipeline and a PyTorch CNN,
both trained on the digits data set scikit-learn ships, exported by their own converters."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.modelimport import External, digits


@pytest.fixture(scope="session")
def sklearn_digits(tmp_path_factory: pytest.TempPathFactory) -> External:
    """StandardScaler + MLPClassifier on digits, converted with skl2onnx (label + probabilities)."""
    from skl2onnx import to_onnx
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = digits()
    clf = make_pipeline(StandardScaler(), MLPClassifier((64,), max_iter=300, random_state=0))
    clf.fit(x[:1200], y[:1200])
    folder = tmp_path_factory.mktemp("sklearn")
    onx = to_onnx(clf, x[:1], options={"zipmap": False}, target_opset=17)
    (folder / "digits_mlp.onnx").write_bytes(onx.SerializeToString())
    np.savez(folder / "calib.npz", X=x[1200:], y=y[1200:])
    return External(folder / "digits_mlp.onnx", folder / "calib.npz")


@pytest.fixture(scope="session")
def torch_digits(tmp_path_factory: pytest.TempPathFactory) -> External:
    """A small CNN trained on the 8x8 digits, exported by torch.onnx.export with a dynamic batch."""
    torch = pytest.importorskip(
        "torch",
        reason="torch missing: pip install -e '.[test-torch]' (the CPU wheel; see pyproject)",
    )
    torch.manual_seed(0)
    x, y = digits()
    images = torch.from_numpy(x.reshape(-1, 1, 8, 8))
    labels = torch.from_numpy(y)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, padding=1, stride=2),
        torch.nn.ReLU(),
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 4 * 4, 10),
    )
    opt = torch.optim.Adam(net.parameters(), lr=0.01)
    for _ in range(60):  # full batch: about a second on two cores
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(net(images[:1200]), labels[:1200])
        loss.backward()
        opt.step()
    net = torch.nn.Sequential(net, torch.nn.Softmax(-1)).eval()
    folder = tmp_path_factory.mktemp("torch")
    with warnings.catch_warnings():  # the TorchScript exporter announces its own deprecation
        warnings.simplefilter("ignore", DeprecationWarning)
        _export(torch, net, images[:1], folder / "digits_cnn.onnx")
    np.savez(folder / "calib.npz", image=x[1200:].reshape(-1, 1, 8, 8), y=y[1200:])
    return External(folder / "digits_cnn.onnx", folder / "calib.npz")


def _export(torch: Any, net: Any, example: Any, path: Path) -> None:
    torch.onnx.export(
        net,
        (example,),
        str(path),
        input_names=["image"],
        output_names=["probabilities"],
        dynamic_axes={"image": {0: "batch"}, "probabilities": {0: "batch"}},
        dynamo=False,  # the TorchScript exporter needs no onnxscript
    )


@pytest.fixture(scope="session")
def sklearn_diabetes(tmp_path_factory: pytest.TempPathFactory) -> External:
    """A scikit-learn MLPRegressor on the diabetes data set: a regressor, scored by MAE."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_diabetes
    from sklearn.neural_network import MLPRegressor

    x, y = load_diabetes(return_X_y=True)
    x, y = x.astype(np.float32) * 10, (y / 100.0).astype(np.float32)
    reg = MLPRegressor(hidden_layer_sizes=(32,), max_iter=2000, random_state=0).fit(
        x[:350], y[:350]
    )
    folder = tmp_path_factory.mktemp("diabetes")
    onx = to_onnx(reg, x[:1], target_opset=17)
    (folder / "diabetes.onnx").write_bytes(onx.SerializeToString())
    np.savez(folder / "calib.npz", X=x[350:], y=y[350:])
    return External(folder / "diabetes.onnx", folder / "calib.npz")
