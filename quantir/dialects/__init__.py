"""quantir's dialects: `nn` (float graph), `q` (quantization), `qi` (integer compute)."""

from xdsl.ir import Dialect


def all_dialects() -> list[Dialect]:
    from quantir.dialects.nn import NN
    from quantir.dialects.q import Q
    from quantir.dialects.qi import QI

    return [NN, Q, QI]
