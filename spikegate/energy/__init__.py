"""Energy accounting: spikes, SynOps, MACs and energy per inference."""

from .activity import E_AC_PJ, E_MAC_PJ, ActivityMonitor, ActivityTotals

__all__ = ["ActivityMonitor", "ActivityTotals", "E_AC_PJ", "E_MAC_PJ"]
