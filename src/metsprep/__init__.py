"""metsprep: a brain-metastasis MRI + RT Structure Set collection to an analysis-ready dataset."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("metsprep")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"
