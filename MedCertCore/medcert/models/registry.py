"""Architecture registry: an id such as ``medcert.unet3d/1`` plus a JSON config builds an ``nn.Module``.

A researcher certifies their own network by registering a factory before calling the API::

    from medcert.models import register_architecture
    register_architecture("mylab.vnet/1", lambda cfg: VNet(**cfg))

The factory must build the same module for the same config on every machine; the module must expose
``trace_layers() -> list[tuple[str, nn.Module]]`` naming the block outputs to fingerprint (≤ 64).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from medcert.errors import WeightsError

Factory = Callable[[dict[str, Any]], nn.Module]
_REGISTRY: dict[str, Factory] = {}


def register_architecture(arch_id: str, factory: Factory) -> None:
    """Make ``arch_id`` buildable; re-registering an id replaces its factory."""
    if not arch_id or "/" not in arch_id:
        raise ValueError("architecture ids look like 'namespace.name/version'")
    _REGISTRY[arch_id] = factory


def known_architectures() -> list[str]:
    _ensure_builtins()
    return sorted(_REGISTRY)


def build_model(arch_id: str, config: dict[str, Any]) -> nn.Module:
    """Build an untrained module; unknown ids raise WeightsError (a verifier reports INCONCLUSIVE)."""
    _ensure_builtins()
    if arch_id not in _REGISTRY:
        raise WeightsError(f"unknown architecture {arch_id!r}; known: {', '.join(known_architectures())}")
    try:
        model = _REGISTRY[arch_id](dict(config))
    except (TypeError, ValueError) as exc:
        raise WeightsError(f"invalid configuration for architecture {arch_id}: {exc}") from exc
    layers = model.trace_layers()  # type: ignore[operator]
    if not 1 <= len(layers) <= 64:
        raise WeightsError(f"architecture {arch_id} names {len(layers)} trace layers (1..64 allowed)")
    return model


def _ensure_builtins() -> None:
    if "medcert.unet3d/1" not in _REGISTRY:
        from medcert.models.unet3d import UNet3D

        register_architecture("medcert.unet3d/1", lambda cfg: UNet3D(**cfg))
    if "medcert.lungnodule/1" not in _REGISTRY:
        from medcert.models.lung_nodule import LungNoduleNet

        register_architecture("medcert.lungnodule/1", lambda cfg: LungNoduleNet(**cfg))
    if "medcert.lungnodule/2" not in _REGISTRY:
        from medcert.models.lung_nodule_two_stage import TwoStageLungNoduleNet

        register_architecture("medcert.lungnodule/2", lambda cfg: TwoStageLungNoduleNet(**cfg))
