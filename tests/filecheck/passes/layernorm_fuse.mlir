// RUN: quantir-opt %s -p layernorm-fuse | filecheck %s
// RUN: %python %inputs/make_layernorm_onnx.py %data/tiny_vit.onnx %t.vit.onnx
// RUN: quantir-opt %t.vit.onnx -p layernorm-fuse | filecheck %s --check-prefix=VIT
// RUN: %python %inputs/make_layernorm_onnx.py %data/tiny_vit.onnx %t.vit_mul.onnx --square mul --divide reciprocal
// RUN: quantir-opt %t.vit_mul.onnx -p layernorm-fuse | filecheck %s --check-prefix=VIT

// The exporter's form: Pow(2), Div, bias. The fused op takes the scope its pieces
// share as its name and the output's SSA name; epsilon and the exponent go away.
func.func @pow_div(%x: tensor<1x4x8xf32>) -> tensor<1x4x8xf32> {
  %mean = nn.reduce_mean %x {axes = array<i64: 2>, keepdims = 1 : i64, onnx_name = "/enc/norm1/ReduceMean"} : (tensor<1x4x8xf32>) -> tensor<1x4x1xf32>
  %centered = nn.sub %x, %mean {onnx_name = "/enc/norm1/Sub"} : (tensor<1x4x8xf32>, tensor<1x4x1xf32>) -> tensor<1x4x8xf32>
  %two = nn.constant dense<2.000000e+00> : tensor<f32> {onnx_name = "/enc/norm1/Constant"}
  %square = nn.pow %centered, %two {onnx_name = "/enc/norm1/Pow"} : (tensor<1x4x8xf32>, tensor<f32>) -> tensor<1x4x8xf32>
  %variance = nn.reduce_mean %square {axes = array<i64: 2>, keepdims = 1 : i64, onnx_name = "/enc/norm1/ReduceMean_1"} : (tensor<1x4x8xf32>) -> tensor<1x4x1xf32>
  %eps = nn.constant dense<9.99999996E-13> : tensor<1xf32> {onnx_name = "/enc/norm1/Constant_1"}
  %shifted = nn.add %variance, %eps {onnx_name = "/enc/norm1/Add"} : (tensor<1x4x1xf32>, tensor<1xf32>) -> tensor<1x4x1xf32>
  %std = nn.sqrt %shifted {onnx_name = "/enc/norm1/Sqrt"} : (tensor<1x4x1xf32>) -> tensor<1x4x1xf32>
  %normed = nn.div %centered, %std {onnx_name = "/enc/norm1/Div"} : (tensor<1x4x8xf32>, tensor<1x4x1xf32>) -> tensor<1x4x8xf32>
  %gamma = nn.constant dense<1.500000e+00> : tensor<8xf32> {onnx_name = "norm1.weight"}
  %scaled = nn.mul %normed, %gamma {onnx_name = "/enc/norm1/Mul"} : (tensor<1x4x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  %beta = nn.constant dense<2.500000e-01> : tensor<8xf32> {onnx_name = "norm1.bias"}
  %out = nn.add %scaled, %beta {onnx_name = "/enc/norm1/Add_1"} : (tensor<1x4x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  func.return %out : tensor<1x4x8xf32>
}

// CHECK-LABEL: func.func @pow_div(%x: tensor<1x4x8xf32>) -> tensor<1x4x8xf32> {
// CHECK-NEXT:    %gamma = nn.constant dense<1.500000e+00> : tensor<8xf32> {onnx_name = "norm1.weight"}
// CHECK-NEXT:    %beta = nn.constant dense<2.500000e-01> : tensor<8xf32> {onnx_name = "norm1.bias"}
// CHECK-NEXT:    %out = nn.layer_norm %x, %gamma, %beta {axis = 2 : i64, epsilon = 1.000000e-12 : f32, onnx_name = "/enc/norm1"} : (tensor<1x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
// CHECK-NEXT:    func.return %out : tensor<1x4x8xf32>
// CHECK-NEXT:  }

// Mul(d, d), Reciprocal + Mul, operands swapped, over two axes, no bias: the Add after
// the scale reads an argument, not a constant, so it stays. Names share no scope: the
// fused op takes the name of the op it replaces.
func.func @mul_reciprocal(%x: tensor<2x3x4xf32>) -> tensor<2x3x4xf32> {
  %mean = nn.reduce_mean %x {axes = array<i64: 1, 2>, keepdims = 1 : i64, onnx_name = "ReduceMean_7"} : (tensor<2x3x4xf32>) -> tensor<2x1x1xf32>
  %centered = nn.sub %x, %mean {onnx_name = "Sub_8"} : (tensor<2x3x4xf32>, tensor<2x1x1xf32>) -> tensor<2x3x4xf32>
  %square = nn.mul %centered, %centered {onnx_name = "Mul_9"} : (tensor<2x3x4xf32>, tensor<2x3x4xf32>) -> tensor<2x3x4xf32>
  %variance = nn.reduce_mean %square {axes = array<i64: 1, 2>, keepdims = 1 : i64, onnx_name = "ReduceMean_10"} : (tensor<2x3x4xf32>) -> tensor<2x1x1xf32>
  %eps = nn.constant dense<1.000000e-05> : tensor<f32> {onnx_name = "eps"}
  %shifted = nn.add %eps, %variance {onnx_name = "Add_11"} : (tensor<f32>, tensor<2x1x1xf32>) -> tensor<2x1x1xf32>
  %std = nn.sqrt %shifted {onnx_name = "Sqrt_12"} : (tensor<2x1x1xf32>) -> tensor<2x1x1xf32>
  %inv = nn.reciprocal %std {onnx_name = "Reciprocal_13"} : (tensor<2x1x1xf32>) -> tensor<2x1x1xf32>
  %normed = nn.mul %inv, %centered {onnx_name = "Mul_14"} : (tensor<2x1x1xf32>, tensor<2x3x4xf32>) -> tensor<2x3x4xf32>
  %gamma = nn.constant dense<[1.000000e+00, 2.000000e+00, 3.000000e+00, 4.000000e+00]> : tensor<4xf32> {onnx_name = "gamma"}
  %scaled = nn.mul %gamma, %normed {onnx_name = "Mul_15"} : (tensor<4xf32>, tensor<2x3x4xf32>) -> tensor<2x3x4xf32>
  %y = nn.add %scaled, %x {onnx_name = "Add_16"} : (tensor<2x3x4xf32>, tensor<2x3x4xf32>) -> tensor<2x3x4xf32>
  func.return %y : tensor<2x3x4xf32>
}

// CHECK-LABEL: func.func @mul_reciprocal(%x: tensor<2x3x4xf32>) -> tensor<2x3x4xf32> {
// CHECK-NEXT:    %gamma = nn.constant
// CHECK-NEXT:    %scaled = nn.layer_norm %x, %gamma {axis = 1 : i64, epsilon = 1.000000e-05 : f32, onnx_name = "Mul_15"} : (tensor<2x3x4xf32>, tensor<4xf32>) -> tensor<2x3x4xf32>
// CHECK-NEXT:    %y = nn.add %scaled, %x {onnx_name = "Add_16"}
// CHECK-NEXT:    func.return %y : tensor<2x3x4xf32>
// CHECK-NEXT:  }

// Near misses, each left exactly as it is.

// Epsilon differs per row: a [4, 1] constant, not one value.
func.func @eps_per_row(%x: tensor<1x4x8xf32>) -> tensor<1x4x8xf32> {
  %mean = nn.reduce_mean %x {axes = array<i64: 2>, keepdims = 1 : i64, onnx_name = "ln/ReduceMean"} : (tensor<1x4x8xf32>) -> tensor<1x4x1xf32>
  %centered = nn.sub %x, %mean {onnx_name = "ln/Sub"} : (tensor<1x4x8xf32>, tensor<1x4x1xf32>) -> tensor<1x4x8xf32>
  %square = nn.mul %centered, %centered {onnx_name = "ln/Square"} : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %variance = nn.reduce_mean %square {axes = array<i64: 2>, keepdims = 1 : i64, onnx_name = "ln/ReduceMean_1"} : (tensor<1x4x8xf32>) -> tensor<1x4x1xf32>
  %eps = nn.constant dense<[[1.000000e-05], [2.000000e-05], [3.000000e-05], [4.000000e-05]]> : tensor<4x1xf32> {onnx_name = "ln/eps"}
  %shifted = nn.add %variance, %eps {onnx_name = "ln/Add"} : (tensor<1x4x1xf32>, tensor<4x1xf32>) -> tensor<1x4x1xf32>
  %std = nn.sqrt %shifted {onnx_name = "ln/Sqrt"} : (tensor<1x4x1xf32>) -> tensor<1x4x1xf32>
  %normed = nn.div %centered, %std {onnx_name = "ln/Div"} : (tensor<1x4x8xf32>, tensor<1x4x1xf32>) -> tensor<1x4x8xf32>
  %gamma = nn.constant dense<1.500000e+00> : tensor<8xf32> {onnx_name = "gamma"}
  %out = nn.mul %normed, %gamma {onnx_name = "ln/Mul"} : (tensor<1x4x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  func.return %out : tensor<1x4x8xf32>
}

// CHECK-LABEL: func.func @eps_per_row
// CHECK-NOT:     nn.layer_norm
// CHECK:         %eps = nn.constant {{.*}} : tensor<4x1xf32>
// CHECK-NEXT:    %shifted = nn.add %variance, %eps
// CHECK-NOT:     nn.layer_norm
// CHECK:         %out = nn.mul %normed, %gamma
// CHECK-NEXT:    func.return %out

// Reduces over axis 1 of three: not the trailing axes.
func.func @axes_not_trailing(%x: tensor<1x4x8xf32>) -> tensor<1x4x8xf32> {
  %mean = nn.reduce_mean %x {axes = array<i64: 1>, keepdims = 1 : i64, onnx_name = "ln/ReduceMean"} : (tensor<1x4x8xf32>) -> tensor<1x1x8xf32>
  %centered = nn.sub %x, %mean {onnx_name = "ln/Sub"} : (tensor<1x4x8xf32>, tensor<1x1x8xf32>) -> tensor<1x4x8xf32>
  %square = nn.mul %centered, %centered {onnx_name = "ln/Square"} : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %variance = nn.reduce_mean %square {axes = array<i64: 1>, keepdims = 1 : i64, onnx_name = "ln/ReduceMean_1"} : (tensor<1x4x8xf32>) -> tensor<1x1x8xf32>
  %eps = nn.constant dense<1.000000e-05> : tensor<f32> {onnx_name = "ln/eps"}
  %shifted = nn.add %variance, %eps {onnx_name = "ln/Add"} : (tensor<1x1x8xf32>, tensor<f32>) -> tensor<1x1x8xf32>
  %std = nn.sqrt %shifted {onnx_name = "ln/Sqrt"} : (tensor<1x1x8xf32>) -> tensor<1x1x8xf32>
  %normed = nn.div %centered, %std {onnx_name = "ln/Div"} : (tensor<1x4x8xf32>, tensor<1x1x8xf32>) -> tensor<1x4x8xf32>
  %gamma = nn.constant dense<1.500000e+00> : tensor<8xf32> {onnx_name = "gamma"}
  %out = nn.mul %normed, %gamma {onnx_name = "ln/Mul"} : (tensor<1x4x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  func.return %out : tensor<1x4x8xf32>
}

// CHECK-LABEL: func.func @axes_not_trailing
// CHECK-NOT:     nn.layer_norm
// CHECK:         %mean = nn.reduce_mean %x {axes = array<i64: 1>
// CHECK-NOT:     nn.layer_norm
// CHECK:         %out = nn.mul %normed, %gamma
// CHECK-NEXT:    func.return %out

// keepdims 0: the mean of [1, 8, 8] over the last axis is [1, 8], which the Sub then
// broadcasts along the wrong axis.
func.func @keepdims_zero(%x: tensor<1x8x8xf32>) -> tensor<1x8x8xf32> {
  %mean = nn.reduce_mean %x {axes = array<i64: 2>, keepdims = 0 : i64, onnx_name = "ln/ReduceMean"} : (tensor<1x8x8xf32>) -> tensor<1x8xf32>
  %centered = nn.sub %x, %mean {onnx_name = "ln/Sub"} : (tensor<1x8x8xf32>, tensor<1x8xf32>) -> tensor<1x8x8xf32>
  %square = nn.mul %centered, %centered {onnx_name = "ln/Square"} : (tensor<1x8x8xf32>, tensor<1x8x8xf32>) -> tensor<1x8x8xf32>
  %variance = nn.reduce_mean %square {axes = array<i64: 2>, keepdims = 0 : i64, onnx_name = "ln/ReduceMean_1"} : (tensor<1x8x8xf32>) -> tensor<1x8xf32>
  %eps = nn.constant dense<1.000000e-05> : tensor<f32> {onnx_name = "ln/eps"}
  %shifted = nn.add %variance, %eps {onnx_name = "ln/Add"} : (tensor<1x8xf32>, tensor<f32>) -> tensor<1x8xf32>
  %std = nn.sqrt %shifted {onnx_name = "ln/Sqrt"} : (tensor<1x8xf32>) -> tensor<1x8xf32>
  %normed = nn.div %centered, %std {onnx_name = "ln/Div"} : (tensor<1x8x8xf32>, tensor<1x8xf32>) -> tensor<1x8x8xf32>
  %gamma = nn.constant dense<1.500000e+00> : tensor<8xf32> {onnx_name = "gamma"}
  %out = nn.mul %normed, %gamma {onnx_name = "ln/Mul"} : (tensor<1x8x8xf32>, tensor<8xf32>) -> tensor<1x8x8xf32>
  func.return %out : tensor<1x8x8xf32>
}

// CHECK-LABEL: func.func @keepdims_zero
// CHECK-NOT:     nn.layer_norm
// CHECK:         %mean = nn.reduce_mean %x {axes = array<i64: 2>, keepdims = 0 : i64
// CHECK-NOT:     nn.layer_norm
// CHECK:         %out = nn.mul %normed, %gamma
// CHECK-NEXT:    func.return %out

// The centered value is also an output: fusing would have to keep it alive.
func.func @centered_has_other_user(%x: tensor<1x4x8xf32>) -> (tensor<1x4x8xf32>, tensor<1x4x8xf32>) {
  %mean = nn.reduce_mean %x {axes = array<i64: 2>, keepdims = 1 : i64, onnx_name = "ln/ReduceMean"} : (tensor<1x4x8xf32>) -> tensor<1x4x1xf32>
  %centered = nn.sub %x, %mean {onnx_name = "ln/Sub"} : (tensor<1x4x8xf32>, tensor<1x4x1xf32>) -> tensor<1x4x8xf32>
  %square = nn.mul %centered, %centered {onnx_name = "ln/Square"} : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %variance = nn.reduce_mean %square {axes = array<i64: 2>, keepdims = 1 : i64, onnx_name = "ln/ReduceMean_1"} : (tensor<1x4x8xf32>) -> tensor<1x4x1xf32>
  %eps = nn.constant dense<1.000000e-05> : tensor<f32> {onnx_name = "ln/eps"}
  %shifted = nn.add %variance, %eps {onnx_name = "ln/Add"} : (tensor<1x4x1xf32>, tensor<f32>) -> tensor<1x4x1xf32>
  %std = nn.sqrt %shifted {onnx_name = "ln/Sqrt"} : (tensor<1x4x1xf32>) -> tensor<1x4x1xf32>
  %normed = nn.div %centered, %std {onnx_name = "ln/Div"} : (tensor<1x4x8xf32>, tensor<1x4x1xf32>) -> tensor<1x4x8xf32>
  %gamma = nn.constant dense<1.500000e+00> : tensor<8xf32> {onnx_name = "gamma"}
  %out = nn.mul %normed, %gamma {onnx_name = "ln/Mul"} : (tensor<1x4x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  func.return %out, %centered : tensor<1x4x8xf32>, tensor<1x4x8xf32>
}

// CHECK-LABEL: func.func @centered_has_other_user
// CHECK-NOT:     nn.layer_norm
// CHECK:         %out = nn.mul %normed, %gamma
// CHECK-NEXT:    func.return %out, %centered

// Gamma is an argument, not a constant.
func.func @gamma_not_constant(%x: tensor<1x4x8xf32>, %gamma: tensor<8xf32>) -> tensor<1x4x8xf32> {
  %mean = nn.reduce_mean %x {axes = array<i64: 2>, keepdims = 1 : i64, onnx_name = "ln/ReduceMean"} : (tensor<1x4x8xf32>) -> tensor<1x4x1xf32>
  %centered = nn.sub %x, %mean {onnx_name = "ln/Sub"} : (tensor<1x4x8xf32>, tensor<1x4x1xf32>) -> tensor<1x4x8xf32>
  %square = nn.mul %centered, %centered {onnx_name = "ln/Square"} : (tensor<1x4x8xf32>, tensor<1x4x8xf32>) -> tensor<1x4x8xf32>
  %variance = nn.reduce_mean %square {axes = array<i64: 2>, keepdims = 1 : i64, onnx_name = "ln/ReduceMean_1"} : (tensor<1x4x8xf32>) -> tensor<1x4x1xf32>
  %eps = nn.constant dense<1.000000e-05> : tensor<f32> {onnx_name = "ln/eps"}
  %shifted = nn.add %variance, %eps {onnx_name = "ln/Add"} : (tensor<1x4x1xf32>, tensor<f32>) -> tensor<1x4x1xf32>
  %std = nn.sqrt %shifted {onnx_name = "ln/Sqrt"} : (tensor<1x4x1xf32>) -> tensor<1x4x1xf32>
  %normed = nn.div %centered, %std {onnx_name = "ln/Div"} : (tensor<1x4x8xf32>, tensor<1x4x1xf32>) -> tensor<1x4x8xf32>
  %out = nn.mul %normed, %gamma {onnx_name = "ln/Mul"} : (tensor<1x4x8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  func.return %out : tensor<1x4x8xf32>
}

// CHECK-LABEL: func.func @gamma_not_constant
// CHECK-NOT:     nn.layer_norm
// CHECK:         %out = nn.mul %normed, %gamma
// CHECK-NEXT:    func.return %out

// Every LayerNormalization of the tiny ViT, written out (either form), fuses back; the
// final token average (ReduceMean over axis 1, keepdims 0) is no LayerNorm and stays.
// VIT-COUNT-5:   nn.layer_norm
// VIT-NOT:       nn.sqrt
// VIT:           nn.reduce_mean {{.*}} {axes = array<i64: 1>, keepdims = 0 : i64
// VIT-NOT:       nn.sqrt
