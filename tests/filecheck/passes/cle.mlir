// RUN: quantir-opt %s --split-input-file -p cle 2>/dev/null | filecheck %s
// RUN: quantir-opt %s --split-input-file -p 'cle{relu6=relu}' 2>&1 >/dev/null | filecheck %s --check-prefix=REPORT
// RUN: quantir-opt %s --split-input-file -p cle 2>/dev/null | filecheck %s --check-prefix=HBA
// RUN: quantir-opt %s --split-input-file -p 'cle{high-bias-absorption=false}' 2>/dev/null | filecheck %s --check-prefix=NOHBA

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
// REPORT: cle: no high-bias absorption for conv1 -> conv2: no batch-norm statistics
// REPORT: cle: 'relu6' clipped at 6; it is now a ReLU (relu6=relu), which changes the function
// REPORT: cle: equalized 1 layer pairs (conv1 -> conv2)

// -----

// High-bias absorption. conv1's output channel 0 is about N(5, 1) (its batch norm's beta
// and gamma, as fuse-bn records them), channel 1 about N(0.5, 1): c = max(0, beta - 3 |gamma|)
// = (2, 0). All weight ranges are 1, so equalization scales nothing (s = 1).
func.func @main(%x: tensor<1x1x3x3xf32>) -> tensor<1x1x3x3xf32> {
  %w1 = nn.constant dense<[[[[1.0]]], [[[1.0]]]]> : tensor<2x1x1x1xf32> {onnx_name = "w1"}
  %b1 = nn.constant dense<[5.0, 0.5]> : tensor<2xf32> {onnx_name = "b1"}
  %w2 = nn.constant dense<[[[[1.0]], [[-1.0]]]]> : tensor<1x2x1x1xf32> {onnx_name = "w2"}
  %w3 = nn.constant dense<1.0> : tensor<1x1x3x3xf32> {onnx_name = "w3"}
  %c1 = nn.conv %x, %w1, %b1 {quantir.bn_stats = {beta = array<f64: 5.0, 0.5>, gamma = array<f64: 1.0, -1.0>}, strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv1"} : (tensor<1x1x3x3xf32>, tensor<2x1x1x1xf32>, tensor<2xf32>) -> tensor<1x2x3x3xf32>
  %r1 = nn.relu %c1 {onnx_name = "relu1"} : (tensor<1x2x3x3xf32>) -> tensor<1x2x3x3xf32>
  %c2 = nn.conv %r1, %w2 {quantir.bn_stats = {beta = array<f64: 4.0>, gamma = array<f64: 0.5>}, strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv2"} : (tensor<1x2x3x3xf32>, tensor<1x2x1x1xf32>) -> tensor<1x1x3x3xf32>
  %r2 = nn.relu %c2 {onnx_name = "relu2"} : (tensor<1x1x3x3xf32>) -> tensor<1x1x3x3xf32>
  %c3 = nn.conv %r2, %w3 {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv3"} : (tensor<1x1x3x3xf32>, tensor<1x1x3x3xf32>) -> tensor<1x1x3x3xf32>
  func.return %c3 : tensor<1x1x3x3xf32>
}

// conv1's bias gives up c = (2, 0), and its statistics follow; conv2, which had no bias,
// gets one: W2 c = 1 * 2 + (-1) * 0 = 2. conv2 -> conv3 has c = 4 - 3 * 0.5 = 2.5 to
// absorb, but conv3 pads its input: the zeros at the border would not carry it.
// HBA:      %[[B1:.*]] = nn.constant dense<[3.000000e+00, 5.000000e-01]> : tensor<2xf32> {onnx_name = "b1"}
// HBA:      nn.conv %x, %{{.*}}, %[[B1]] {quantir.bn_stats = {beta = array<f64: 3.000000e+00, 5.000000e-01>, gamma = array<f64: 1.000000e+00, -1.000000e+00>}, {{.*}}onnx_name = "conv1"}
// HBA:      %[[B2:.*]] = nn.constant dense<2.000000e+00> : tensor<1xf32> {onnx_name = "conv2.bias"}
// HBA-NEXT: nn.conv %{{.*}}, %{{.*}}, %[[B2]] {quantir.bn_stats = {beta = array<f64: 4.000000e+00>, gamma = array<f64: 5.000000e-01>}, {{.*}}onnx_name = "conv2"}
// HBA:      nn.conv %{{.*}}, %{{.*}} {strides {{.*}}onnx_name = "conv3"}

// NOHBA:     nn.constant dense<[5.000000e+00, 5.000000e-01]> : tensor<2xf32> {onnx_name = "b1"}
// NOHBA-NOT: conv2.bias

// REPORT: cle: no high-bias absorption for conv2 -> conv3: 'conv3' pads its input (1 channels have beta > 3 |gamma|)
// REPORT: cle: equalized 2 layer pairs (conv1 -> conv2, conv2 -> conv3)
// REPORT: cle: absorbed high biases of 'conv1' into 'conv2' (1 channels, largest 2)
