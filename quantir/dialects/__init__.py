"""quantir's dialects: `nn` (float graph), `q` (quantization), `qi` (integer compute)."""

from xdsl.ir import Dialect


def all_dialects() -> list[Dialect]:
    from quantir.dialects.nn import NN

    dialects = [NN]
    try:
        from quantir.dialects.q import Q
    except ImportError:  # the q dialect is being written
        return dialects
    return [*dialects, Q]
