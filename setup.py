"""The one part of the packaging pyproject.toml cannot say: folders shipped under another name.

The repository keeps the shipped models in `models/` and the board files in `firmware-configs/`;
the wheel carries them as the data-only packages `edge_agent_models` and `edge_agent_boards`, so
no generically named top-level `models` lands in site-packages. `agent.runtime.shipped` finds
them. Everything else (metadata, dependencies, tools) is in pyproject.toml.
"""

from setuptools import find_namespace_packages, find_packages, setup

MODELS = "edge_agent_models"
BOARDS = "edge_agent_boards"
# One package per model folder: setuptools ships data only from folders it knows as packages.
MODEL_FOLDERS = [
    f"{MODELS}.{name}"
    for name in find_namespace_packages("models", exclude=["train", "train.*", "*.eval"])
]

setup(
    packages=[
        *find_packages(include=["agent*", "plugins*", "sim*"]),
        MODELS,
        *MODEL_FOLDERS,
        BOARDS,
        f"{BOARDS}.systemd",
    ],
    package_dir={MODELS: "models", BOARDS: "firmware-configs"},
    package_data={
        "agent": ["py.typed"],
        # What a board runs and `models verify` checks; training scripts and the float
        # networks under eval/ (used by `sim eval` in a checkout) stay out.
        MODELS: ["README.md"],
        **{folder: ["manifest.json", "*.tflite", "*.onnx"] for folder in MODEL_FOLDERS},
        BOARDS: ["*.toml"],
        f"{BOARDS}.systemd": ["*.service"],
    },
    # Beside the venv's bin/, where the unit's Documentation= points: <prefix>/share/doc/edge-agent.
    data_files=[("share/doc/edge-agent", ["README.md", "docs/deploy.md", "docs/mqtt.md"])],
)
