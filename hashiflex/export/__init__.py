"""Export: the quantized IR to design.json (schema-validated), and back."""
from .design import (DesignValidationError, design_from_graph, graph_from_design, load_design, npu_design,
                     validate_design, write_design)

__all__ = ["DesignValidationError", "design_from_graph", "graph_from_design", "load_design", "npu_design",
           "validate_design", "write_design"]
