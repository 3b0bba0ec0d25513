"""Exchange with other tools: NIR export and import (``spikegate.interop.nir``)."""

from .nir import DEFAULT_DT, NIRMappingError, from_nir, to_nir

__all__ = ["DEFAULT_DT", "NIRMappingError", "from_nir", "to_nir"]
