// RUN: quantir-opt %s -p fuse-activation | filecheck %s
// RUN: quantir-opt %s -p fuse-activation -o %t.mlir 2>&1 | filecheck %s --check-prefix=WARN
// RUN: quantir-opt %s -p "fuse-activation{hard-activations=true}" | filecheck %s --check-prefix=HARD

// conv -> relu: the conv applies the relu; its result keeps the relu's name.
func.func @conv_relu(%x: tensor<1x2x3x3xf32>) -> tensor<1x2x3x3xf32> {
  %w = nn.constant dense<1.0> : tensor<2x2x1x1xf32> {onnx_name = "w"}
  %y = nn.conv %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv"} : (tensor<1x2x3x3xf32>, tensor<2x2x1x1xf32>) -> tensor<1x2x3x3xf32>
  %r = nn.relu %y {onnx_name = "relu"} : (tensor<1x2x3x3xf32>) -> tensor<1x2x3x3xf32>
  func.return %r : tensor<1x2x3x3xf32>
}

// CHECK-LABEL: func.func @conv_relu(
// CHECK-NEXT:    %w = nn.constant
// CHECK-NEXT:    %r = nn.conv %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv", activation = "relu"} : (tensor<1x2x3x3xf32>, tensor<2x2x1x1xf32>) -> tensor<1x2x3x3xf32>
// CHECK-NEXT:    func.return %r

// gemm -> clip (ReLU6): bounds in activation_min / activation_max. The clip's result
// has two users: that is fine, the gemm's result takes both.
func.func @gemm_relu6(%a: tensor<1x3xf32>, %b: tensor<3x2xf32>) -> (tensor<1x2xf32>, tensor<1x2xf32>) {
  %y = nn.gemm %a, %b {alpha = 1.0 : f32, beta = 1.0 : f32, trans_a = 0 : i64, trans_b = 0 : i64, onnx_name = "fc"} : (tensor<1x3xf32>, tensor<3x2xf32>) -> tensor<1x2xf32>
  %c = nn.clip %y {min = 0.0 : f32, max = 6.0 : f32, onnx_name = "relu6"} : (tensor<1x2xf32>) -> tensor<1x2xf32>
  func.return %c, %c : tensor<1x2xf32>, tensor<1x2xf32>
}

// CHECK-LABEL: func.func @gemm_relu6(
// CHECK-NEXT:    %c = nn.gemm %a, %b {alpha = 1.000000e+00 : f32, beta = 1.000000e+00 : f32, trans_a = 0 : i64, trans_b = 0 : i64, onnx_name = "fc", activation = "clip", activation_min = 0.000000e+00 : f32, activation_max = 6.000000e+00 : f32}
// CHECK-NEXT:    func.return %c, %c

// conv_transpose -> clip with an upper bound only.
func.func @conv_transpose_clip(%x: tensor<1x2x2x2xf32>, %w: tensor<2x1x1x1xf32>) -> tensor<1x1x2x2xf32> {
  %y = nn.conv_transpose %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, output_padding = array<i64: 0, 0>, group = 1 : i64, onnx_name = "ct"} : (tensor<1x2x2x2xf32>, tensor<2x1x1x1xf32>) -> tensor<1x1x2x2xf32>
  %c = nn.clip %y {max = 1.0 : f32, onnx_name = "cap"} : (tensor<1x1x2x2xf32>) -> tensor<1x1x2x2xf32>
  func.return %c : tensor<1x1x2x2xf32>
}

// CHECK-LABEL: func.func @conv_transpose_clip(
// CHECK-NEXT:    %c = nn.conv_transpose %x, %w {{{.*}}onnx_name = "ct", activation = "clip", activation_max = 1.000000e+00 : f32}
// CHECK-NEXT:    func.return %c

// A residual add (two computed inputs) -> relu: one fused group, the add applies the relu.
func.func @residual(%x: tensor<1x2xf32>, %b: tensor<2x2xf32>) -> tensor<1x2xf32> {
  %y = nn.matmul %x, %b {onnx_name = "mm"} : (tensor<1x2xf32>, tensor<2x2xf32>) -> tensor<1x2xf32>
  %s = nn.add %x, %y {onnx_name = "add"} : (tensor<1x2xf32>, tensor<1x2xf32>) -> tensor<1x2xf32>
  %r = nn.relu %s {onnx_name = "block_relu"} : (tensor<1x2xf32>) -> tensor<1x2xf32>
  func.return %r : tensor<1x2xf32>
}

// CHECK-LABEL: func.func @residual(
// CHECK-NEXT:    %y = nn.matmul %x, %b {onnx_name = "mm"}
// CHECK-NEXT:    %r = nn.add %x, %y {onnx_name = "add", activation = "relu"}
// CHECK-NEXT:    func.return %r

// Left alone: the matmul's output has another user; an add of a constant is a bias,
// not a residual; a second activation after a fused one; a clip without bounds.
func.func @left_alone(%x: tensor<1x2xf32>, %b: tensor<2x2xf32>) -> (tensor<1x2xf32>, tensor<1x2xf32>, tensor<1x2xf32>, tensor<1x2xf32>, tensor<1x2xf32>) {
  %y = nn.matmul %x, %b {onnx_name = "shared"} : (tensor<1x2xf32>, tensor<2x2xf32>) -> tensor<1x2xf32>
  %r = nn.relu %y {onnx_name = "relu_of_shared"} : (tensor<1x2xf32>) -> tensor<1x2xf32>
  %k = nn.constant dense<[1.0, -1.0]> : tensor<2xf32> {onnx_name = "k"}
  %s = nn.add %x, %k {onnx_name = "bias_add"} : (tensor<1x2xf32>, tensor<2xf32>) -> tensor<1x2xf32>
  %t = nn.relu %s {onnx_name = "relu_of_bias_add"} : (tensor<1x2xf32>) -> tensor<1x2xf32>
  %z = nn.matmul %x, %b {onnx_name = "mm2"} : (tensor<1x2xf32>, tensor<2x2xf32>) -> tensor<1x2xf32>
  %z1 = nn.relu %z {onnx_name = "first"} : (tensor<1x2xf32>) -> tensor<1x2xf32>
  %z2 = nn.clip %z1 {max = 6.0 : f32, onnx_name = "second"} : (tensor<1x2xf32>) -> tensor<1x2xf32>
  %u = nn.matmul %x, %b {onnx_name = "mm3"} : (tensor<1x2xf32>, tensor<2x2xf32>) -> tensor<1x2xf32>
  %v = nn.clip %u {onnx_name = "unbounded"} : (tensor<1x2xf32>) -> tensor<1x2xf32>
  func.return %y, %r, %t, %z2, %v : tensor<1x2xf32>, tensor<1x2xf32>, tensor<1x2xf32>, tensor<1x2xf32>, tensor<1x2xf32>
}

// CHECK-LABEL: func.func @left_alone(
// CHECK-NEXT:    %y = nn.matmul %x, %b {onnx_name = "shared"}
// CHECK-NEXT:    %r = nn.relu %y {onnx_name = "relu_of_shared"}
// CHECK-NEXT:    %k = nn.constant
// CHECK-NEXT:    %s = nn.add %x, %k {onnx_name = "bias_add"}
// CHECK-NEXT:    %t = nn.relu %s {onnx_name = "relu_of_bias_add"}
// CHECK-NEXT:    %z1 = nn.matmul %x, %b {onnx_name = "mm2", activation = "relu"}
// CHECK-NEXT:    %z2 = nn.clip %z1 {max = 6.000000e+00 : f32, onnx_name = "second"}
// CHECK-NEXT:    %u = nn.matmul %x, %b {onnx_name = "mm3"}
// CHECK-NEXT:    %v = nn.clip %u {onnx_name = "unbounded"}
// CHECK-NEXT:    func.return %y, %r, %t, %z2, %v

// HardSwish / HardSigmoid fuse only with hard-activations=true (and are not reported
// without it: the target has no such activation then).
func.func @hard(%x: tensor<1x2x3x3xf32>, %w: tensor<2x2x1x1xf32>) -> (tensor<1x2x3x3xf32>, tensor<1x2x3x3xf32>) {
  %y = nn.conv %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv_hs"} : (tensor<1x2x3x3xf32>, tensor<2x2x1x1xf32>) -> tensor<1x2x3x3xf32>
  %h = nn.hard_swish %y {onnx_name = "hswish"} : (tensor<1x2x3x3xf32>) -> tensor<1x2x3x3xf32>
  %z = nn.conv %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv_hsig"} : (tensor<1x2x3x3xf32>, tensor<2x2x1x1xf32>) -> tensor<1x2x3x3xf32>
  %g = nn.hard_sigmoid %z {alpha = 0.2 : f32, beta = 0.5 : f32, onnx_name = "hsigmoid"} : (tensor<1x2x3x3xf32>) -> tensor<1x2x3x3xf32>
  func.return %h, %g : tensor<1x2x3x3xf32>, tensor<1x2x3x3xf32>
}

// CHECK-LABEL: func.func @hard(
// CHECK-NEXT:    %y = nn.conv %x, %w {{{.*}}onnx_name = "conv_hs"}
// CHECK-NEXT:    %h = nn.hard_swish %y
// CHECK-NEXT:    %z = nn.conv %x, %w {{{.*}}onnx_name = "conv_hsig"}
// CHECK-NEXT:    %g = nn.hard_sigmoid %z

// HARD-LABEL: func.func @hard(
// HARD-NEXT:    %h = nn.conv %x, %w {{{.*}}onnx_name = "conv_hs", activation = "hard_swish"}
// HARD-NEXT:    %g = nn.conv %x, %w {{{.*}}onnx_name = "conv_hsig", activation = "hard_sigmoid", activation_alpha = 2.000000e-01 : f32, activation_beta = 5.000000e-01 : f32}
// HARD-NEXT:    func.return %h, %g

// WARN-NOT:  'relu'
// WARN:      fuse-activation: relu 'relu_of_shared' not fused into nn.matmul 'shared': its output has 2 users
// WARN:      fuse-activation: relu 'relu_of_bias_add' not fused into nn.add 'bias_add': it adds a constant (a bias, not a residual)
// WARN:      fuse-activation: clip 'second' not fused into nn.matmul 'mm2': it already applies activation relu
// WARN:      fuse-activation: clip 'unbounded' not fused into nn.matmul 'mm3': a clip without bounds is no activation
// WARN-NOT:  hswish
