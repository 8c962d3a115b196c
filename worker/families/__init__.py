"""Model families, one module each behind one interface (``worker.families.base.ModelFamily``).

``FAMILIES`` maps each ``imagine.model_specs.Family`` to its ``ModelFamily``; ``family_of``
looks a spec's up. A new family is a module here and a line in ``FAMILIES``.
"""

from __future__ import annotations

from imagine.model_specs import Family, ModelSpec
from worker.families.base import ModelFamily
from worker.families.flux import Flux
from worker.families.sd import StableDiffusion
from worker.families.sd3 import StableDiffusion3
from worker.families.sdxl import StableDiffusionXL

__all__ = ["FAMILIES", "ModelFamily", "family_of"]

_SD = StableDiffusion()

FAMILIES: dict[Family, ModelFamily] = {
    "tiny": _SD,
    "sd15": _SD,
    "sd-turbo": _SD,
    "sdxl": StableDiffusionXL(),
    "flux": Flux(),
    "sd3": StableDiffusion3(),
}
"""The families this worker can load."""


def family_of(spec: ModelSpec) -> ModelFamily:
    """The family that loads and runs ``spec``'s model."""
    family = FAMILIES.get(spec.family)
    if family is None:
        served = ", ".join(FAMILIES)
        raise ValueError(f"model {spec.name}: family {spec.family!r} is not served by this worker yet "
                         f"(served: {served})")
    return family
