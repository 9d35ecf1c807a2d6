// RUN: quantir-opt %s --split-input-file --verify-diagnostics | filecheck %s

func.func @conv_group(%x: tensor<1x4x8x8xf32>, %w: tensor<8x3x3x3xf32>) -> tensor<1x8x8x8xf32> {
  %y = nn.conv %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv1"} : (tensor<1x4x8x8xf32>, tensor<8x3x3x3xf32>) -> tensor<1x8x8x8xf32>
  func.return %y : tensor<1x8x8x8xf32>
}
// CHECK: nn.conv 'conv1': group 1 does not fit 4 input channels and weight (8, 3, 3, 3)

// -----

func.func @conv_result(%x: tensor<1x3x8x8xf32>, %w: tensor<8x3x3x3xf32>) -> tensor<1x8x8x8xf32> {
  %y = nn.conv %x, %w {strides = array<i64: 2, 2>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv2"} : (tensor<1x3x8x8xf32>, tensor<8x3x3x3xf32>) -> tensor<1x8x8x8xf32>
  func.return %y : tensor<1x8x8x8xf32>
}
// CHECK: nn.conv 'conv2': result types tensor<1x8x8x8xf32> do not match the inferred tensor<1x8x4x4xf32>

// -----

func.func @negative_pad(%x: tensor<1x3x8x8xf32>, %w: tensor<8x3x3x3xf32>) -> tensor<1x8x8x8xf32> {
  %y = nn.conv %x, %w {strides = array<i64: 1, 1>, pads = array<i64: -1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv3"} : (tensor<1x3x8x8xf32>, tensor<8x3x3x3xf32>) -> tensor<1x8x8x8xf32>
  func.return %y : tensor<1x8x8x8xf32>
}
// CHECK: nn.conv 'conv3': pads (-1, 1, 1, 1) must be 4 non-negative integers (all begins, then all ends)

// -----

func.func @broadcast(%a: tensor<2x3xf32>, %b: tensor<4x3xf32>) -> tensor<4x3xf32> {
  %y = nn.add %a, %b {onnx_name = "add"} : (tensor<2x3xf32>, tensor<4x3xf32>) -> tensor<4x3xf32>
  func.return %y : tensor<4x3xf32>
}
// CHECK: nn.add 'add': shapes (2, 3), (4, 3) do not broadcast

// -----

func.func @softmax_axis(%a: tensor<2x3xf32>) -> tensor<2x3xf32> {
  %y = nn.softmax %a {axis = 2 : i64, onnx_name = "sm"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
  func.return %y : tensor<2x3xf32>
}
// CHECK: nn.softmax 'sm': axis 2 is outside the rank 2

// -----

func.func @clip_bounds(%a: tensor<2x3xf32>) -> tensor<2x3xf32> {
  %y = nn.clip %a {min = 6.000000e+00 : f32, max = 0.000000e+00 : f32, onnx_name = "clip"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
  func.return %y : tensor<2x3xf32>
}
// CHECK: nn.clip 'clip': min 6.0 is greater than max 0.0

// -----

func.func @reshape(%a: tensor<2x3xf32>) -> tensor<5xf32> {
  %y = nn.reshape %a {shape = array<i64: 5>, onnx_name = "r"} : (tensor<2x3xf32>) -> tensor<5xf32>
  func.return %y : tensor<5xf32>
}
// CHECK: nn.reshape 'r': cannot reshape (2, 3) to (5,)

// -----

func.func @transpose(%a: tensor<2x3xf32>) -> tensor<3x2xf32> {
  %y = nn.transpose %a {perm = array<i64: 0, 0>, onnx_name = "t"} : (tensor<2x3xf32>) -> tensor<3x2xf32>
  func.return %y : tensor<3x2xf32>
}
// CHECK: nn.transpose 't': perm (0, 0) is not a permutation of 2 axes

// -----

func.func @matmul(%a: tensor<2x3xf32>, %b: tensor<4x5xf32>) -> tensor<2x5xf32> {
  %y = nn.matmul %a, %b {onnx_name = "mm"} : (tensor<2x3xf32>, tensor<4x5xf32>) -> tensor<2x5xf32>
  func.return %y : tensor<2x5xf32>
}
// CHECK: nn.matmul 'mm': contraction sizes differ: (2, 3) x (4, 5)

// -----

func.func @reduce(%a: tensor<2x3xf32>) -> tensor<2xf32> {
  %y = nn.reduce_mean %a {axes = array<i64: 1, 1>, keepdims = 0 : i64, onnx_name = "mean"} : (tensor<2x3xf32>) -> tensor<2xf32>
  func.return %y : tensor<2xf32>
}
// CHECK: nn.reduce_mean 'mean': axes (1, 1) must be sorted, unique and not empty

// -----

func.func @gelu(%a: tensor<2x3xf32>) -> tensor<2x3xf32> {
  %y = nn.gelu %a {approximate = "fast", onnx_name = "g"} : (tensor<2x3xf32>) -> tensor<2x3xf32>
  func.return %y : tensor<2x3xf32>
}
// CHECK: nn.gelu 'g': approximate must be none or tanh, got fast

// -----

func.func @pool(%a: tensor<1x1x4x4xf32>) -> tensor<1x1x2x2xf32> {
  %y = nn.average_pool %a {kernel_shape = array<i64: 2, 2>, strides = array<i64: 2, 2>, pads = array<i64: 2, 0, 0, 0>, ceil_mode = 0 : i64, count_include_pad = 0 : i64, onnx_name = "ap"} : (tensor<1x1x4x4xf32>) -> tensor<1x1x2x2xf32>
  func.return %y : tensor<1x1x2x2xf32>
}
// CHECK: nn.average_pool 'ap': pads (2, 0, 0, 0) must be smaller than the kernel (2, 2)

// -----

func.func @where(%c: tensor<2xf32>, %a: tensor<2xf32>) -> tensor<2xf32> {
  %y = nn.where %c, %a, %a {onnx_name = "w"} : (tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
  func.return %y : tensor<2xf32>
}
// CHECK: nn.where 'w': condition must be a tensor of i1, got tensor<2xf32>
