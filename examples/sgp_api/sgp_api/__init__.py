"""SGP API: a small items service built with FastAPI and SQLModel."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sgp-api")
except PackageNotFoundError:  # running from a source checkout that is not installed
    __version__ = "0.0.0"
