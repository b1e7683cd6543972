"""The passes over the IR, in one import: each layer of the package states its own (the frontend, the analysis,
the quantization passes, the hardware model); this module gathers them for notebooks and scripts.

Each pass takes a :class:`~hashiflex.ir.Graph` and returns a new one (or a derived table); none mutates its input.
"""
from __future__ import annotations

from .analysis import LayerInfo, annotate
from .frontend import PADDING_STYLES, import_torch, insert_requant_points, same_padding
from .hwmodel import (check_parallelism, choose_parallelism, hw_model, initiation_interval, latency_stages,
                      parallelism, pixel_parallelism)
from .ops.base import MAX_SHIFT, LayerHw, check_finite
from .ops.weighted import AdderGraph, shared_adder_graph
from .quant.ptq import _round_half_up, calibrate_activations, quantize_weights

__all__ = ["LayerInfo", "annotate", "PADDING_STYLES", "import_torch", "insert_requant_points", "same_padding",
           "check_parallelism", "choose_parallelism", "hw_model", "initiation_interval", "latency_stages",
           "parallelism", "pixel_parallelism", "MAX_SHIFT", "LayerHw", "check_finite", "AdderGraph",
           "shared_adder_graph", "_round_half_up", "calibrate_activations", "quantize_weights"]
