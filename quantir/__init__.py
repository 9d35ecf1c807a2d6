"""quantir: an open quantization compiler for neural networks, built on xDSL.

    import quantir
    module = quantir.import_onnx("model.onnx")           # ONNX -> nn dialect
    session = quantir.Session("model.onnx")              # float execution
    outputs = session.run({"input": x})
"""

from quantir.errors import QuantirError
from quantir.frontend.onnx_import import import_onnx
from quantir.ir import load_module, parse_module, print_module
from quantir.passes import compile, parse_pipeline
from quantir.runtime.session import Session

__version__ = "0.1.0"

__all__ = [
    "QuantirError",
    "Session",
    "compile",
    "import_onnx",
    "load_module",
    "parse_module",
    "parse_pipeline",
    "print_module",
]
