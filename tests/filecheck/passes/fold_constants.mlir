// RUN: quantir-opt %s -p fold-constants | filecheck %s

// Shape arithmetic and weight transposes fold; anything reading an argument stays.
func.func @main(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
  %w = nn.constant dense<[[1.000000e+00, 2.000000e+00], [3.000000e+00, 4.000000e+00], [5.000000e+00, 6.000000e+00]]> : tensor<3x2xf32> {onnx_name = "w"}
  %wt = nn.transpose %w {perm = array<i64: 1, 0>, onnx_name = "wt"} : (tensor<3x2xf32>) -> tensor<2x3xf32>
  %two = nn.constant dense<2.000000e+00> : tensor<f32> {onnx_name = "two"}
  %w2 = nn.mul %wt, %two {onnx_name = "scaled"} : (tensor<2x3xf32>, tensor<f32>) -> tensor<2x3xf32>
  %y = nn.add %x, %w2 {onnx_name = "add"} : (tensor<2x3xf32>, tensor<2x3xf32>) -> tensor<2x3xf32>
  func.return %y : tensor<2x3xf32>
}

// CHECK:      func.func @main(%x: tensor<2x3xf32>) -> tensor<2x3xf32> {
// CHECK-NEXT:   %w2 = nn.constant dense<[[2.000000e+00, 6.000000e+00, 1.000000e+01], [4.000000e+00, 8.000000e+00, 1.200000e+01]]> : tensor<2x3xf32> {onnx_name = "scaled"}
// CHECK-NEXT:   %y = nn.add %x, %w2 {onnx_name = "add"}
// CHECK-NEXT:   func.return %y : tensor<2x3xf32>
