"""Reports: netlist statistics from Yosys (more in later issues: area, energy, throughput)."""
from .netlist import NetlistStats, netlist_stats

__all__ = ["NetlistStats", "netlist_stats"]
