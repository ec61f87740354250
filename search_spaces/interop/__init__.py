"""Models in and out: ONNX / TorchScript / standalone-Python / timm export, and checkpoint import from other libraries."""
from search_spaces.interop.weights import (PADDINGS, WeightsError, Conv2dSameTF, use_tf_padding, has_tf_padding, load_checkpoint, detect_format, source_convention, key_map, to_native, from_native, load_weights, pretrained_model)
from search_spaces.interop.export import (FORMATS as EXPORT_FORMATS, ONNX_OPSET, TOLERANCE, ROUNDING_FACTOR, ExportError, ExportCheckFailed, Agreement, atomic_write, check_agreement, export_onnx, export_torchscript, python_source, timm_arch_def, timm_source)

__all__ = [
    "EXPORT_FORMATS",
    "PADDINGS",
    "WeightsError",
    "Conv2dSameTF",
    "use_tf_padding",
    "has_tf_padding",
    "load_checkpoint",
    "detect_format",
    "source_convention",
    "key_map",
    "to_native",
    "from_native",
    "load_weights",
    "pretrained_model",
    "ONNX_OPSET",
    "TOLERANCE",
    "ROUNDING_FACTOR",
    "ExportError",
    "ExportCheckFailed",
    "Agreement",
    "atomic_write",
    "check_agreement",
    "export_onnx",
    "export_torchscript",
    "python_source",
    "timm_arch_def",
    "timm_source",
]
