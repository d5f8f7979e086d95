"""cycleqd: evolve one multi-skill model from expert models with CycleQD.

The package keeps language-model specifics (inference engine, tasks) apart from the merging
layer and the search, so any PyTorch state dict can be searched by the same machinery.
"""

from cycleqd.errors import CycleQDError
from cycleqd.resources import bound_kernel_cache

bound_kernel_cache()

__all__ = ["CycleQDError"]
__version__ = "0.1.0"
