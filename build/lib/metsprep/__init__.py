"""metsprep: a brain-metastasis MRI + RT Structure Set collection to an analysis-ready dataset."""

from typing import Any


def __getattr__(name: str) -> Any:
    # `__version__` is looked up on first use: importlib.metadata costs ~50 ms of start-up,
    # and most stage jobs never write the version.
    if name == "__version__":
        from importlib.metadata import PackageNotFoundError, version

        try:
            value = version("metsprep")
        except PackageNotFoundError:  # running from a source tree without install
            value = "0.0.0+unknown"
        globals()["__version__"] = value
        return value
    raise AttributeError(f"module 'metsprep' has no attribute {name!r}")
