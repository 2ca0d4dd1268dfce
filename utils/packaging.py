"""What a logged model needs installed to load, pinned to the versions that trained it."""

from __future__ import annotations

from importlib import metadata


class RequirementNotInstalledError(LookupError):
    """A package to pin is not installed here, so its version is unknown."""


def pinned_requirements(*packages: str) -> list[str]:
    """`name==version` for each installed package, e.g. for `log_model(pip_requirements=...)`.

    MLflow infers requirements on its own, but what it detects at logging time may not be what
    you meant (and inference costs seconds per model): pin explicitly.
    """
    pins = []
    for package in packages:
        try:
            pins.append(f"{package}=={metadata.version(package)}")
        except metadata.PackageNotFoundError:
            raise RequirementNotInstalledError(
                f"Cannot pin '{package}': it is not installed in this environment "
                f"({metadata.distribution('mlflow').locate_file('')})."
            ) from None
    return pins
