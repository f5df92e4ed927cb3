"""The apparatus as one: configuration, sessions, acquisition, storage, extraction,
imprint, reports and the command line. No Qt here."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("brainpaste")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"
