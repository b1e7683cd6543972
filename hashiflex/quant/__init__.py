"""Quantization: Po2 weights (:mod:`.po2`) and the fake-quant torch model (:mod:`.fakequant`)."""
