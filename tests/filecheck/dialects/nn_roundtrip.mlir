// RUN: quantir-opt %s | quantir-opt | filecheck %s
// RUN: quantir-opt %s --print-op-generic | quantir-opt | filecheck %s
// RUN: quantir-opt %s --print-op-generic | filecheck %s --check-prefix=GENERIC

func.func @main(%x: tensor<1x2x4x4xf32> {quantir.name = "x"}) -> (tensor<1x6xf32> {quantir.name = "y"}) {
  %w = nn.constant dense<"0x000010C1000000C10000E0C00000C0C00000A0C0000080C0000040C0000000C0000080BF000000000000803F0000004000004040000080400000A0400000C0400000E04000000041"> : tensor<3x2x1x3xf32> {onnx_name = "w"}
  %b = nn.constant dense<[1.000000e+00, 2.000000e+00, 3.000000e+00]> : tensor<3xf32> {onnx_name = "b"}
  %c = nn.conv %x, %w, %b {strides = array<i64: 1, 2>, pads = array<i64: 0, 1, 0, 1>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv"} : (tensor<1x2x4x4xf32>, tensor<3x2x1x3xf32>, tensor<3xf32>) -> tensor<1x3x4x2xf32>
  %r = nn.clip %c {min = 0.000000e+00 : f32, max = 6.000000e+00 : f32, onnx_name = "relu6"} : (tensor<1x3x4x2xf32>) -> tensor<1x3x4x2xf32>
  %p = nn.max_pool %r {kernel_shape = array<i64: 2, 2>, strides = array<i64: 2, 2>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, ceil_mode = 0 : i64, onnx_name = "pool"} : (tensor<1x3x4x2xf32>) -> tensor<1x3x2x1xf32>
  %f = nn.reshape %p {shape = array<i64: 1, 6>, onnx_name = "flatten"} : (tensor<1x3x2x1xf32>) -> tensor<1x6xf32>
  %s = nn.softmax %f {axis = 1 : i64, onnx_name = "softmax"} : (tensor<1x6xf32>) -> tensor<1x6xf32>
  func.return %s : tensor<1x6xf32>
}

// CHECK:      func.func @main(%x: tensor<1x2x4x4xf32> {quantir.name = "x"}) -> (tensor<1x6xf32> {quantir.name = "y"}) {
// CHECK-NEXT:   %w = nn.constant dense_resource<__elided__> : tensor<3x2x1x3xf32> {onnx_name = "w"}
// CHECK-NEXT:   %b = nn.constant dense<[1.000000e+00, 2.000000e+00, 3.000000e+00]> : tensor<3xf32> {onnx_name = "b"}
// CHECK-NEXT:   %c = nn.conv %x, %w, %b {strides = array<i64: 1, 2>, pads = array<i64: 0, 1, 0, 1>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv"} : (tensor<1x2x4x4xf32>, tensor<3x2x1x3xf32>, tensor<3xf32>) -> tensor<1x3x4x2xf32>
// CHECK-NEXT:   %r = nn.clip %c {min = 0.000000e+00 : f32, max = 6.000000e+00 : f32, onnx_name = "relu6"}
// CHECK-NEXT:   %p = nn.max_pool %r {kernel_shape = array<i64: 2, 2>, strides = array<i64: 2, 2>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, ceil_mode = 0 : i64, onnx_name = "pool"}
// CHECK-NEXT:   %f = nn.reshape %p {shape = array<i64: 1, 6>, onnx_name = "flatten"} : (tensor<1x3x2x1xf32>) -> tensor<1x6xf32>
// CHECK-NEXT:   %s = nn.softmax %f {axis = 1 : i64, onnx_name = "softmax"}
// CHECK-NEXT:   func.return %s : tensor<1x6xf32>

// GENERIC: "nn.constant"() <{value = dense_resource<__elided__> : tensor<3x2x1x3xf32>, onnx_name = "w"}>
// GENERIC: "nn.conv"(%x, %w, %b) <{strides = array<i64: 1, 2>, pads = array<i64: 0, 1, 0, 1>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv"}>
