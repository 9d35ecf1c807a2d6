// Shape arithmetic folds away at import; attributes are normalised.

// RUN: %python %inputs/make_onnx.py shape_chain %t.chain.onnx
// RUN: quantir-opt %t.chain.onnx --input-shape x=5,3,4 | filecheck %s --check-prefix=CHAIN
// CHAIN:      func.func @main(%x: tensor<5x3x4xf32> {quantir.name = "x"}) -> (tensor<5x12xf32> {quantir.name = "y"})
// CHAIN-NEXT:   %y = nn.reshape %x {shape = array<i64: 5, 12>, onnx_name = "flatten"} : (tensor<5x3x4xf32>) -> tensor<5x12xf32>
// CHAIN-NEXT:   func.return %y : tensor<5x12xf32>

// RUN: %python %inputs/make_onnx.py old_softmax %t.softmax.onnx
// RUN: quantir-opt %t.softmax.onnx | filecheck %s --check-prefix=SOFTMAX
// SOFTMAX:      nn.reshape %x {shape = array<i64: 1, 12>, onnx_name = "softmax.flatten"}
// SOFTMAX-NEXT: nn.softmax {{.*}} {axis = 1 : i64, onnx_name = "softmax"} : (tensor<1x12xf32>) -> tensor<1x12xf32>
// SOFTMAX-NEXT: nn.reshape {{.*}} {shape = array<i64: 1, 3, 2, 2>, onnx_name = "softmax.unflatten"}

// RUN: %python %inputs/make_onnx.py same_upper %t.same.onnx
// RUN: quantir-opt %t.same.onnx | filecheck %s --check-prefix=SAME
// SAME: nn.conv %x, %w {strides = array<i64: 2, 2>, pads = array<i64: 0, 0, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv"} : (tensor<1x2x5x5xf32>, tensor<4x2x2x2xf32>) -> tensor<1x4x3x3xf32>

// RUN: %python %inputs/make_onnx.py unsupported %t.unsupported.onnx
// RUN: not quantir-opt %t.unsupported.onnx 2>&1 | filecheck %s --check-prefix=ERROR
// ERROR: quantir-opt: error: unsupported ONNX operators: Round (nodes 'round'); Sin (nodes 'sin_a', 'sin_b'); rewrite them
