// The float module that bias_correction.mlir was quantized from (its reference): the
// same layers by ONNX node name, with the float weights.
func.func @main(%x: tensor<1x1x8x8xf32> {quantir.name = "input"}) -> (tensor<1x2x8x8xf32> {quantir.name = "y"}) {
  %w0 = nn.constant dense<[[[[1.0]]], [[[-1.0]]]]> : tensor<2x1x1x1xf32> {onnx_name = "w0"}
  %b0 = nn.constant dense<[1.0, 0.0]> : tensor<2xf32> {onnx_name = "b0"}
  %h = nn.conv %x, %w0, %b0 {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv0", activation = "relu"} : (tensor<1x1x8x8xf32>, tensor<2x1x1x1xf32>, tensor<2xf32>) -> tensor<1x2x8x8xf32>
  %w1 = nn.constant dense<[[[[0.504]], [[0.26]]], [[[1.0]], [[-0.497]]]]> : tensor<2x2x1x1xf32> {onnx_name = "w1"}
  %b1 = nn.constant dense<[0.1, -0.2]> : tensor<2xf32> {onnx_name = "b1"}
  %y1 = nn.conv %h, %w1, %b1 {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv1"} : (tensor<1x2x8x8xf32>, tensor<2x2x1x1xf32>, tensor<2xf32>) -> tensor<1x2x8x8xf32>
  %w2 = nn.constant dense<[[[[1.0]], [[0.0]]], [[[0.0]], [[1.0]]]]> : tensor<2x2x1x1xf32> {onnx_name = "w2"}
  %y = nn.conv %y1, %w2 {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv2"} : (tensor<1x2x8x8xf32>, tensor<2x2x1x1xf32>) -> tensor<1x2x8x8xf32>
  func.return %y : tensor<1x2x8x8xf32>
}
