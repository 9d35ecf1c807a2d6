// RUN: quantir-opt %s -p cle 2>/dev/null | filecheck %s
// RUN: quantir-opt %s -p 'cle{relu6=relu}' 2>&1 >/dev/null | filecheck %s --check-prefix=REPORT

// conv -> relu6 -> conv: channel 0 of the first conv has range 4, channel 1 range 0.25;
// the second conv reads them with range 1 each. s = sqrt(r1 / r2) = (2, 0.5).
func.func @main(%x: tensor<1x1x2x2xf32>) -> tensor<1x1x2x2xf32> {
  %w1 = nn.constant dense<[[[[4.000000e+00]]], [[[2.500000e-01]]]]> : tensor<2x1x1x1xf32> {onnx_name = "w1"}
  %b1 = nn.constant dense<[1.000000e+00, 1.000000e+00]> : tensor<2xf32> {onnx_name = "b1"}
  %w2 = nn.constant dense<[[[[1.000000e+00]], [[-1.000000e+00]]]]> : tensor<1x2x1x1xf32> {onnx_name = "w2"}
  %c1 = nn.conv %x, %w1, %b1 {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv1"} : (tensor<1x1x2x2xf32>, tensor<2x1x1x1xf32>, tensor<2xf32>) -> tensor<1x2x2x2xf32>
  %r = nn.clip %c1 {min = 0.000000e+00 : f32, max = 6.000000e+00 : f32, onnx_name = "relu6"} : (tensor<1x2x2x2xf32>) -> tensor<1x2x2x2xf32>
  %c2 = nn.conv %r, %w2 {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv2"} : (tensor<1x2x2x2xf32>, tensor<1x2x1x1xf32>) -> tensor<1x1x2x2xf32>
  // A HardSwish between two convs blocks equalization: left alone.
  %h = nn.hard_swish %c2 {onnx_name = "hswish"} : (tensor<1x1x2x2xf32>) -> tensor<1x1x2x2xf32>
  %w3 = nn.constant dense<[[[[3.000000e+00]]]]> : tensor<1x1x1x1xf32> {onnx_name = "w3"}
  %c4 = nn.conv %h, %w3 {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv4"} : (tensor<1x1x2x2xf32>, tensor<1x1x1x1xf32>) -> tensor<1x1x2x2xf32>
  func.return %c4 : tensor<1x1x2x2xf32>
}

// Both channels now have range 1; the bias follows channel 1/s; ReLU6 becomes ReLU then
// a per-channel bound 6 / s = (3, 12), so the function is unchanged.
// CHECK:      %[[W1:.*]] = nn.constant dense<[{{\[\[\[}}2.000000e+00]]], {{\[\[\[}}5.000000e-01]]]]> : tensor<2x1x1x1xf32> {onnx_name = "w1"}
// CHECK-NEXT: %[[B1:.*]] = nn.constant dense<[5.000000e-01, 2.000000e+00]> : tensor<2xf32> {onnx_name = "b1"}
// CHECK-NEXT: %[[C1:.*]] = nn.conv %x, %[[W1]], %[[B1]]
// CHECK-NEXT: %[[RELU:.*]] = nn.clip %[[C1]] {min = 0.000000e+00 : f32, onnx_name = "relu6"}
// CHECK-NEXT: %[[BOUND:.*]] = nn.constant dense<{{\[\[\[}}3.000000e+00]], {{\[\[}}1.200000e+01]]]> : tensor<2x1x1xf32> {onnx_name = "relu6/per_channel_max"}
// CHECK-NEXT: %[[MIN:.*]] = nn.min %[[RELU]], %[[BOUND]] {onnx_name = "relu6/per_channel_max"}
// CHECK:      nn.constant dense<{{\[\[\[\[}}2.000000e+00]], {{\[\[}}-5.000000e-01]]]]> : tensor<1x2x1x1xf32> {onnx_name = "w2"}
// CHECK:      nn.conv %[[MIN]]
// CHECK:      nn.hard_swish

// REPORT: cle: left 'conv2' alone: 'hswish' (nn.hard_swish) is not positive-homogeneous
// REPORT: cle: 'relu6' clipped at 6; it is now a ReLU (relu6=relu), which changes the function
// REPORT: cle: equalized 1 layer pairs (conv1 -> conv2)
