// RUN: quantir-opt %s -p layernorm-decompose | filecheck %s
// RUN: quantir-opt %s -p layernorm-decompose,layernorm-fuse | filecheck %s --check-prefix=ROUNDTRIP

// One LayerNorm with a bias: every step named <node>/<step>, SSA names %<result>_<step>;
// the last step keeps the LayerNorm's own SSA name, so its reader prints unchanged.
func.func @with_bias(%x: tensor<2x4xf32>) -> tensor<2x4xf32> {
  %gamma = nn.constant dense<[1.000000e+00, 2.000000e+00, 3.000000e+00, 4.000000e+00]> : tensor<4xf32> {onnx_name = "ln.weight"}
  %beta = nn.constant dense<[5.000000e-01, 0.000000e+00, -5.000000e-01, 1.000000e+00]> : tensor<4xf32> {onnx_name = "ln.bias"}
  %ln = nn.layer_norm %x, %gamma, %beta {axis = 1 : i64, epsilon = 1.000000e-05 : f32, onnx_name = "ln"} : (tensor<2x4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<2x4xf32>
  %y = nn.relu %ln {onnx_name = "relu"} : (tensor<2x4xf32>) -> tensor<2x4xf32>
  func.return %y : tensor<2x4xf32>
}

// CHECK-LABEL: func.func @with_bias(%x: tensor<2x4xf32>) -> tensor<2x4xf32> {
// CHECK-NEXT:    %gamma = nn.constant
// CHECK-NEXT:    %beta = nn.constant
// CHECK-NEXT:    %ln_mean = nn.reduce_mean %x {axes = array<i64: 1>, keepdims = 1 : i64, onnx_name = "ln/mean"} : (tensor<2x4xf32>) -> tensor<2x1xf32>
// CHECK-NEXT:    %ln_center = nn.sub %x, %ln_mean {onnx_name = "ln/center"} : (tensor<2x4xf32>, tensor<2x1xf32>) -> tensor<2x4xf32>
// CHECK-NEXT:    %ln_square = nn.mul %ln_center, %ln_center {onnx_name = "ln/square"} : (tensor<2x4xf32>, tensor<2x4xf32>) -> tensor<2x4xf32>
// CHECK-NEXT:    %ln_variance = nn.reduce_mean %ln_square {axes = array<i64: 1>, keepdims = 1 : i64, onnx_name = "ln/variance"} : (tensor<2x4xf32>) -> tensor<2x1xf32>
// CHECK-NEXT:    %ln_epsilon = nn.constant dense<1.000000e-05> : tensor<1xf32> {onnx_name = "ln/epsilon"}
// CHECK-NEXT:    %ln_add_epsilon = nn.add %ln_variance, %ln_epsilon {onnx_name = "ln/add_epsilon"} : (tensor<2x1xf32>, tensor<1xf32>) -> tensor<2x1xf32>
// CHECK-NEXT:    %ln_sqrt = nn.sqrt %ln_add_epsilon {onnx_name = "ln/sqrt"} : (tensor<2x1xf32>) -> tensor<2x1xf32>
// CHECK-NEXT:    %ln_rsqrt = nn.reciprocal %ln_sqrt {onnx_name = "ln/rsqrt"} : (tensor<2x1xf32>) -> tensor<2x1xf32>
// CHECK-NEXT:    %ln_normalize = nn.mul %ln_center, %ln_rsqrt {onnx_name = "ln/normalize"} : (tensor<2x4xf32>, tensor<2x1xf32>) -> tensor<2x4xf32>
// CHECK-NEXT:    %ln_scale = nn.mul %ln_normalize, %gamma {onnx_name = "ln/scale"} : (tensor<2x4xf32>, tensor<4xf32>) -> tensor<2x4xf32>
// CHECK-NEXT:    %ln = nn.add %ln_scale, %beta {onnx_name = "ln/shift"} : (tensor<2x4xf32>, tensor<4xf32>) -> tensor<2x4xf32>
// CHECK-NEXT:    %y = nn.relu %ln {onnx_name = "relu"}
// CHECK-NEXT:    func.return %y : tensor<2x4xf32>
// CHECK-NEXT:  }

// Without a bias the scale is the last step; normalising over two axes reduces both.
func.func @without_bias(%x: tensor<2x3x4xf32>) -> tensor<2x3x4xf32> {
  %gamma = nn.constant dense<[1.000000e+00, 2.000000e+00, 3.000000e+00, 4.000000e+00]> : tensor<4xf32> {onnx_name = "norm.weight"}
  %norm = nn.layer_norm %x, %gamma {axis = 1 : i64, epsilon = 1.000000e-06 : f32, onnx_name = "/enc/norm/LayerNormalization"} : (tensor<2x3x4xf32>, tensor<4xf32>) -> tensor<2x3x4xf32>
  func.return %norm : tensor<2x3x4xf32>
}

// CHECK-LABEL: func.func @without_bias(%x: tensor<2x3x4xf32>) -> tensor<2x3x4xf32> {
// CHECK-NEXT:    %gamma = nn.constant
// CHECK-NEXT:    %norm_mean = nn.reduce_mean %x {axes = array<i64: 1, 2>, keepdims = 1 : i64, onnx_name = "/enc/norm/LayerNormalization/mean"} : (tensor<2x3x4xf32>) -> tensor<2x1x1xf32>
// CHECK-NEXT:    %norm_center = nn.sub %x, %norm_mean {onnx_name = "/enc/norm/LayerNormalization/center"}
// CHECK-NEXT:    %norm_square = nn.mul %norm_center, %norm_center {onnx_name = "/enc/norm/LayerNormalization/square"}
// CHECK-NEXT:    %norm_variance = nn.reduce_mean %norm_square {axes = array<i64: 1, 2>, keepdims = 1 : i64, onnx_name = "/enc/norm/LayerNormalization/variance"} : (tensor<2x3x4xf32>) -> tensor<2x1x1xf32>
// CHECK-NEXT:    %norm_epsilon = nn.constant dense<1.000000e-06> : tensor<1xf32> {onnx_name = "/enc/norm/LayerNormalization/epsilon"}
// CHECK-NEXT:    %norm_add_epsilon = nn.add %norm_variance, %norm_epsilon {onnx_name = "/enc/norm/LayerNormalization/add_epsilon"}
// CHECK-NEXT:    %norm_sqrt = nn.sqrt %norm_add_epsilon {onnx_name = "/enc/norm/LayerNormalization/sqrt"}
// CHECK-NEXT:    %norm_rsqrt = nn.reciprocal %norm_sqrt {onnx_name = "/enc/norm/LayerNormalization/rsqrt"}
// CHECK-NEXT:    %norm_normalize = nn.mul %norm_center, %norm_rsqrt {onnx_name = "/enc/norm/LayerNormalization/normalize"}
// CHECK-NEXT:    %norm = nn.mul %norm_normalize, %gamma {onnx_name = "/enc/norm/LayerNormalization/scale"} : (tensor<2x3x4xf32>, tensor<4xf32>) -> tensor<2x3x4xf32>
// CHECK-NEXT:    func.return %norm : tensor<2x3x4xf32>
// CHECK-NEXT:  }

// layernorm-fuse gives back each original op: operands, axis, epsilon, name, SSA name;
// the epsilon constants are gone.
// ROUNDTRIP-LABEL: func.func @with_bias
// ROUNDTRIP-NEXT:    %gamma = nn.constant
// ROUNDTRIP-NEXT:    %beta = nn.constant
// ROUNDTRIP-NEXT:    %ln = nn.layer_norm %x, %gamma, %beta {axis = 1 : i64, epsilon = 1.000000e-05 : f32, onnx_name = "ln"} : (tensor<2x4xf32>, tensor<4xf32>, tensor<4xf32>) -> tensor<2x4xf32>
// ROUNDTRIP-NEXT:    %y = nn.relu %ln
// ROUNDTRIP-NEXT:    func.return %y
// ROUNDTRIP-LABEL: func.func @without_bias
// ROUNDTRIP-NEXT:    %gamma = nn.constant
// ROUNDTRIP-NEXT:    %norm = nn.layer_norm %x, %gamma {axis = 1 : i64, epsilon = 1.000000e-06 : f32, onnx_name = "/enc/norm/LayerNormalization"} : (tensor<2x3x4xf32>, tensor<4xf32>) -> tensor<2x3x4xf32>
// ROUNDTRIP-NEXT:    func.return %norm
