"""hashiflex: hardened power-of-two (Po2) DNN accelerators, generated from PyTorch through Chisel.

The flow (each arrow one function, see README):
torch model -> IR (:mod:`hashiflex.ir`) -> passes (:mod:`hashiflex.passes`) -> integer golden model
(:mod:`hashiflex.ref`) -> design.json (:mod:`hashiflex.export`) -> Chisel (``./mill hashiflex.run``) ->
Verilator co-simulation (:mod:`hashiflex.sim`).
"""
__version__ = "0.1.0"
