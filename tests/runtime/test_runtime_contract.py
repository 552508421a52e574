"""One contract suite over every committed model file: LiteRT (float and int8 I/O) and ONNX."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agent.config.sections import RuntimeConfig
from agent.errors import ModelError
from agent.runtime import Model, ModelSlot, load_model
from tests.support.runtime import committed_models, variants

CPU = RuntimeConfig(accelerator="cpu", threads=1)


@pytest.fixture(params=variants())
def model(request: pytest.FixtureRequest) -> Any:
    folder, fmt, io = request.param
    m = load_model(folder, CPU, fmt=fmt, io=io)
    yield m
    m.close()


def golden(m: Model) -> list[dict[str, Any]]:
    folder = Path(m.path).parent
    vectors: list[dict[str, Any]] = json.loads((folder / "manifest.json").read_text())["golden"]
    assert vectors, f"{folder.name} has no golden vectors"
    return vectors


def test_specs_have_static_shapes(model: Model) -> None:
    for spec in model.inputs + model.outputs:
        assert all(d > 0 for d in spec.shape)
        assert spec.dtype in ("float32", "int8", "uint8")
        assert spec.quantized == (spec.dtype != "float32")
    assert model.accelerator == "cpu"


def test_golden_vectors_match(model: Model) -> None:
    for vector in golden(model):
        outs = model.infer(*vector["inputs"])
        for got, want in zip(outs, vector["outputs"], strict=True):
            assert got.dtype == np.float32
            err = np.abs(got - np.asarray(want, np.float32).reshape(got.shape)).max()
            assert err <= vector["tolerance"]


def test_fast_path_equals_infer(model: Model) -> None:
    fast = model.fast_path()
    rng = np.random.default_rng(3)
    for vector in [*golden(model)[:4], None, None]:
        if vector is None:  # also off the golden set, including values that saturate int8
            values = [rng.normal(0, 3, s.shape).astype(np.float32) for s in model.inputs]
        else:
            values = [
                np.asarray(v, np.float32).reshape(b.shape)
                for v, b in zip(vector["inputs"], fast.inputs, strict=True)
            ]
        for buf, v in zip(fast.inputs, values, strict=True):
            buf[...] = v
        fast.run()
        for got, want in zip(fast.outputs, model.infer(*values), strict=True):
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_fast_path_allocates_nothing(model: Model) -> None:
    fast = model.fast_path()
    out_ids = [id(b) for b in fast.outputs]
    for _ in range(100):
        fast.run()
    # tracemalloc counts every thread: a thread an earlier test left running (a timer, a network
    # loop) may allocate during one window, but a call that allocates does so in every window.
    growths = []
    tracemalloc.start()
    try:
        for _ in range(3):
            before = tracemalloc.get_traced_memory()[0]
            for _ in range(1000):
                fast.run()
            growths.append(tracemalloc.get_traced_memory()[0] - before)
    finally:
        tracemalloc.stop()
    growth = min(growths)
    assert growth < 512, f"fast path grew memory by {growths} bytes over 1000 calls (3 windows)"
    assert [id(b) for b in fast.outputs] == out_ids


def test_bind_twice_on_the_same_buffers(model: Model) -> None:
    ins = [np.zeros(s.shape, np.float32) for s in model.inputs]
    outs = [np.zeros(s.shape, np.float32) for s in model.outputs]
    first, second = model.bind(ins, outs), model.bind(ins, outs)
    ins[0][...] = np.asarray(golden(model)[0]["inputs"][0], np.float32).reshape(ins[0].shape)
    first.run()
    from_first = [o.copy() for o in outs]
    outs[0][...] = 0
    second.run()
    assert second.outputs[0] is outs[0] and first.inputs[0] is ins[0]
    np.testing.assert_array_equal(outs[0], from_first[0])
    assert np.abs(outs[0]).sum() > 0


def test_bind_rejects_unusable_buffers(model: Model) -> None:
    good_in = [np.zeros(s.shape, np.float32) for s in model.inputs]
    good_out = [np.zeros(s.shape, np.float32) for s in model.outputs]
    shape = model.inputs[0].shape
    bad: list[Any] = [
        np.zeros(shape, np.float64),
        np.zeros((*shape, 2), np.float32),
        np.zeros((*shape[:-1], shape[-1] * 2), np.float32)[..., ::2],
    ]
    for buf in bad:
        with pytest.raises(ModelError, match="C-contiguous float32"):
            model.bind([buf, *good_in[1:]], good_out)
    with pytest.raises(ModelError, match="buffers"):
        model.bind(good_in, [])


def test_infer_rejects_wrong_sizes(model: Model) -> None:
    with pytest.raises(ModelError, match="needs shape"):
        model.infer(np.zeros(3, np.float32), *[np.zeros(s.shape) for s in model.inputs[1:]])
    with pytest.raises(ModelError, match="inputs"):
        model.infer()


def test_closed_model_refuses_work(model: Model) -> None:
    fast = model.fast_path()
    model.close()
    with pytest.raises(ModelError, match="closed"):
        model.infer(*[np.zeros(s.shape, np.float32) for s in model.inputs])
    if model.backend == "tflite":  # the interpreter is gone; ORT keeps what a binding holds
        with pytest.raises(ModelError, match="closed"):
            fast.run()


@pytest.mark.parametrize("folder", committed_models(), ids=lambda p: p.name)
def test_tflite_and_onnx_agree(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    formats = {f["format"] for f in manifest["files"]}
    if formats != {"tflite", "onnx"}:
        pytest.skip(f"{folder.name} ships {sorted(formats)} only")
    tolerance = 2 * max(v["tolerance"] for v in manifest["golden"])
    rng = np.random.default_rng(11)
    with load_model(folder, CPU, fmt="tflite") as lite, load_model(folder, CPU, fmt="onnx") as ort:
        batches = [v["inputs"] for v in manifest["golden"]]
        batches += [[rng.normal(0, 1, s.shape).astype(np.float32) for s in lite.inputs]]
        for values in batches:
            for a, b in zip(lite.infer(*values), ort.infer(*values), strict=True):
                assert np.abs(a - b).max() <= tolerance


@pytest.mark.parametrize("folder", committed_models(), ids=lambda p: p.name)
def test_int8_io_file_quantizes_like_the_runtime(folder: Path) -> None:
    manifest = json.loads((folder / "manifest.json").read_text())
    if not any(f["io"] == "int8" for f in manifest["files"]):
        pytest.skip("no int8-I/O file")
    with load_model(folder, CPU, fmt="tflite", io="int8") as m:
        spec = m.inputs[0]
        x = np.asarray(manifest["golden"][0]["inputs"][0], np.float32).reshape(spec.shape)
        raw = np.clip(np.rint(x / spec.scale + spec.zero_point), -128, 127).astype(np.int8)
        # Raw int8 passes straight through; float is quantized with the tensor's own params.
        np.testing.assert_array_equal(m.infer(raw)[0], m.infer(x)[0])


def test_slot_swaps_backends_over_the_same_buffers() -> None:
    found = [f for f in committed_models() if (f / "model.onnx").exists()]
    assert found, "every committed model ships an ONNX file"
    folder = found[0]
    with load_model(folder, CPU, fmt="tflite") as lite, load_model(folder, CPU, fmt="onnx") as ort:
        slot = ModelSlot(lite)
        golden = json.loads((folder / "manifest.json").read_text())["golden"][0]
        x = np.asarray(golden["inputs"][0])
        slot.inputs[0][...] = x.reshape(slot.inputs[0].shape)
        slot.run()
        before = slot.outputs[0].copy()
        out_buffer = slot.outputs[0]
        slot.activate(ort, slot.prepare(ort))
        slot.run()
        assert slot.outputs[0] is out_buffer
        np.testing.assert_allclose(slot.outputs[0], ort.infer(x)[0], atol=1e-6)
        # The two formats agree within the model's own golden tolerance.
        assert np.abs(slot.outputs[0] - before).max() <= 2 * golden["tolerance"]
