"""Models in and out: ONNX / TorchScript / standalone-Python / timm export, and checkpoint import from other
libraries."""
from search_spaces.interop.export import FORMATS as EXPORT_FORMATS
from search_spaces.interop.export import (
                                          ONNX_OPSET,
                                          ROUNDING_FACTOR,
                                          TOLERANCE,
                                          Agreement,
                                          ExportCheckFailed,
                                          ExportError,
                                          atomic_write,
                                          check_agreement,
                                          export_onnx,
                                          export_torchscript,
)
from search_spaces.interop.padding import Conv2dSameTF, has_tf_padding, use_tf_padding
from search_spaces.interop.standalone import python_source
from search_spaces.interop.timm_def import TIMM_SPACE, timm_arch_def, timm_check, timm_source
from search_spaces.interop.weights import (
                                          PADDINGS,
                                          WeightsError,
                                          detect_format,
                                          from_native,
                                          key_map,
                                          layout_problem,
                                          load_checkpoint,
                                          load_weights,
                                          pretrained_model,
                                          source_convention,
                                          to_native,
)

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
    "layout_problem",
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
    "TIMM_SPACE",
    "timm_check",
    "timm_arch_def",
    "timm_source",
]
