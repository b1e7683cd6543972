"""Co-simulation of generated RTL with Verilator (through pyverilator-mm)."""
from .stream import SimResult, StreamSim

__all__ = ["SimResult", "StreamSim"]
