// RUN: quantir-opt %s --split-input-file -p quantize,lower-to-int | filecheck %s
// RUN: quantir-opt %s --split-input-file -p 'quantize,lower-to-int{rounding=tflite}' | filecheck %s --check-prefix=TFLITE

// Every dequantize -> op -> quantize group becomes integer compute and a q.requant;
// quantize / dequantize stay only at the function's boundary. Inputs are calibrated
// float modules (ranges as `calibrate` writes them), quantized in the same pipeline.

func.func @conv_pool_softmax(%x: tensor<1x2x4x4xf32> {quantir.name = "x", quantir.range = array<f64: -1.0, 1.0>}) -> (tensor<1x3xf32> {quantir.name = "y"}) {
  %w = nn.constant dense<[[[[1.0]], [[-0.5]]], [[[0.25]], [[0.5]]], [[[-2.0]], [[1.0]]]]> : tensor<3x2x1x1xf32> {onnx_name = "w"}
  %b = nn.constant dense<[0.1, -0.2, 0.3]> : tensor<3xf32> {onnx_name = "b"}
  %c = nn.conv %x, %w, %b {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv", activation = "relu", quantir.ranges = [array<f64: 0.0, 3.0>]} : (tensor<1x2x4x4xf32>, tensor<3x2x1x1xf32>, tensor<3xf32>) -> tensor<1x3x4x4xf32>
  %p = nn.global_average_pool %c {onnx_name = "pool", quantir.ranges = [array<f64: 0.0, 1.5>]} : (tensor<1x3x4x4xf32>) -> tensor<1x3x1x1xf32>
  %f = nn.reshape %p {shape = array<i64: 1, 3>, onnx_name = "flatten", quantir.ranges = [array<f64: 0.0, 1.5>]} : (tensor<1x3x1x1xf32>) -> tensor<1x3xf32>
  %s = nn.softmax %f {axis = 1 : i64, onnx_name = "softmax", quantir.ranges = [array<f64: 0.0, 1.0>]} : (tensor<1x3xf32>) -> tensor<1x3xf32>
  func.return %s : tensor<1x3xf32>
}

// The conv keeps its quantized weights; its bias is int32 at s_x * s_w; the requant
// multiplier is s_x s_w / s_y = 0.0052493 = 0.67191 * 2^-7 (Q31: 1442928645), one per
// channel along axis 1. ReLU needs no clamp: the output's zero point is the storage
// minimum. Global average pooling is a mean at 2^-18 of the input scale (the sum of
// 16 8-bit values times 2^18 still fits 31 bits).
// CHECK-LABEL: func.func @conv_pool_softmax
// CHECK:       %0 = q.quantize %x
// CHECK-NEXT:  %1 = q.constant dense<[{{\[\[\[}}127]], {{\[\[}}-64]]], {{\[\[\[}}64]], {{\[\[}}127]]], {{\[\[\[}}-127]], {{\[\[}}64]]]]> : tensor<3x2x1x1xi8>
// CHECK-NEXT:  %2 = q.constant dense<[1619, -6477, 2429]> : tensor<3xi32>
// CHECK-NEXT:  %3 = qi.conv2d %0, %1, %2 {{.*}} -> tensor<1x3x4x4x!q.per_axis<i32:f32:1, {6.175698625907056e-05:0, 3.087849312953528e-05:0, 0.0001235139725181411:0}>>
// CHECK-NEXT:  %c = q.requant %3 {onnx_name = "conv", multiplier = array<i32: 1442928645, 1442928645, 1442928645>, shift = array<i64: -7, -8, -6>, rounding = "single", axis = 1 : i64} : {{.*}} -> tensor<1x3x4x4x!q.uniform<i8:f32, 0.011764705882352941:-128>>
// CHECK-NEXT:  %4 = qi.reduce_mean %c {axes = array<i64: 2, 3>, keepdims = 1 : i64, fraction_bits = 18 : i64, onnx_name = "pool"} : {{.*}} -> tensor<1x3x1x1x!q.uniform<i32:f32, 4.487879136029412e-08:0>>
// CHECK-NEXT:  %p = q.requant %4 {onnx_name = "pool", multiplier = 1073741824 : i32, shift = -16 : i64, rounding = "single"}
// The reshape moves integers; softmax gives probabilities at 2^-16.
// CHECK-NEXT:  %f = nn.reshape %p {{.*}} -> tensor<1x3x!q.uniform<i8:f32, 0.0058823529411764705:-128>>
// CHECK-NEXT:  %5 = qi.softmax %f {axis = 1 : i64, exp_table = {{.*}} : tensor<256xi32>, fraction_bits = 16 : i64, onnx_name = "softmax"} : {{.*}} -> tensor<1x3x!q.uniform<i32:f32, 1.52587890625e-05:0>>
// CHECK-NEXT:  %s = q.requant %5 {onnx_name = "softmax", multiplier = 2139095040 : i32, shift = -8 : i64, rounding = "single"}
// CHECK-NEXT:  %6 = q.dequantize %s
// CHECK-NEXT:  func.return %6
// TFLITE-LABEL: func.func @conv_pool_softmax
// TFLITE:       q.requant %3 {onnx_name = "conv", multiplier = array<i32: 1442928645, 1442928645, 1442928645>, shift = array<i64: -7, -8, -6>, rounding = "tflite", axis = 1 : i64}

// -----
// Gemm with trans_b: the weight constant is transposed at compile time.
func.func @gemm(%x: tensor<1x4xf32> {quantir.name = "x", quantir.range = array<f64: -1.0, 1.0>}) -> (tensor<1x2xf32> {quantir.name = "y"}) {
  %w = nn.constant dense<[[0.5, -0.25, 1.0, 0.0], [0.125, 0.5, -1.0, 0.75]]> : tensor<2x4xf32> {onnx_name = "w"}
  %b = nn.constant dense<[0.5, -0.5]> : tensor<2xf32> {onnx_name = "b"}
  %y = nn.gemm %x, %w, %b {alpha = 1.0 : f32, beta = 1.0 : f32, trans_a = 0 : i64, trans_b = 1 : i64, onnx_name = "fc", quantir.ranges = [array<f64: -2.0, 2.0>]} : (tensor<1x4xf32>, tensor<2x4xf32>, tensor<2xf32>) -> tensor<1x2xf32>
  func.return %y : tensor<1x2xf32>
}

// The weight (2x4, per output channel) becomes 4x2 quantized along its last axis.
// CHECK-LABEL: func.func @gemm
// CHECK:       %1 = q.constant dense<{{\[\[}}64, 16], [-32, 64], [127, -127], [0, 95]]> : tensor<4x2xi8> {onnx_name = "fc"} : tensor<4x2x!q.per_axis<i8:f32:1,
// CHECK-NEXT:  %2 = q.constant dense<[8096, -8096]> : tensor<2xi32>
// CHECK-NEXT:  %3 = qi.matmul %0, %1, %2
// CHECK-NEXT:  %y = q.requant %3 {onnx_name = "fc", multiplier = array<i32: 1082196484, 1082196484>, shift = array<i64: -7, -7>, rounding = "single", axis = 1 : i64}

// -----


// A residual add with ReLU: both inputs to one i32 scale, add, requantize, clamp.
func.func @residual(%a: tensor<1x8xf32> {quantir.name = "a", quantir.range = array<f64: -1.0, 1.0>}, %b: tensor<1x8xf32> {quantir.name = "b", quantir.range = array<f64: -4.0, 2.0>}) -> (tensor<1x8xf32> {quantir.name = "y"}) {
  %s = nn.add %a, %b {onnx_name = "add", activation = "relu", quantir.ranges = [array<f64: -1.0, 3.0>]} : (tensor<1x8xf32>, tensor<1x8xf32>) -> tensor<1x8xf32>
  %m = nn.mul %s, %a {onnx_name = "mul", quantir.ranges = [array<f64: -3.0, 3.0>]} : (tensor<1x8xf32>, tensor<1x8xf32>) -> tensor<1x8xf32>
  func.return %m : tensor<1x8xf32>
}

// Both addends go to one i32 scale 2 max(s_a, s_b) / 2^20 (TFLite's scheme); the
// fused ReLU is a clamp at the output zero point. Mul multiplies (x - zp) products.
// CHECK-LABEL: func.func @residual
// CHECK:       %2 = q.requant %1 {onnx_name = "add", multiplier = 1431655765 : i32, shift = 18 : i64, rounding = "single"} : {{.*}} -> tensor<1x8x!q.uniform<i32:f32, 4.487879136029412e-08:0>>
// CHECK-NEXT:  %3 = q.requant %0 {onnx_name = "add", multiplier = 1073741824 : i32, shift = 20 : i64, rounding = "single"} : {{.*}} -> tensor<1x8x!q.uniform<i32:f32, 4.487879136029412e-08:0>>
// CHECK-NEXT:  %4 = qi.add %2, %3
// CHECK-NEXT:  %5 = q.requant %4 {{.*}} -> tensor<1x8x!q.uniform<i8:f32, 0.01568627450980392:-64>>
// CHECK-NEXT:  %s = qi.clamp %5 {min = -64 : i64, max = 127 : i64, onnx_name = "add"}
// CHECK-NEXT:  %6 = qi.mul %s, %1 {{.*}} -> tensor<1x8x!q.uniform<i32:f32, 0.00012302960399846212:0>>
// CHECK-NEXT:  %m = q.requant %6

// -----


// Functions of one value become tables: Erf, and a Div by a constant.
func.func @gelu_part(%x: tensor<1x8xf32> {quantir.name = "x", quantir.range = array<f64: -3.0, 3.0>}) -> (tensor<1x8xf32> {quantir.name = "y"}) {
  %c = nn.constant dense<1.4142135> : tensor<f32> {onnx_name = "sqrt2"}
  %d = nn.div %x, %c {onnx_name = "div", quantir.ranges = [array<f64: -2.2, 2.2>]} : (tensor<1x8xf32>, tensor<f32>) -> tensor<1x8xf32>
  %e = nn.erf %d {onnx_name = "erf", quantir.ranges = [array<f64: -1.0, 1.0>]} : (tensor<1x8xf32>) -> tensor<1x8xf32>
  func.return %e : tensor<1x8xf32>
}

// A one-input function (and a binary op with a one-element constant) is a table of its
// value at each of the 256 input integers.
// CHECK-LABEL: func.func @gelu_part
// CHECK:       %d = qi.lookup %0 {onnx_name = "div", table = {{.*}} : tensor<256xi8>} : {{.*}} -> tensor<1x8x!q.uniform<i8:f32, 0.017254901960784316:-1>>
// CHECK-NEXT:  %e = qi.lookup %d {onnx_name = "erf", table = {{.*}} : tensor<256xi8>}
// CHECK-NOT:   nn.

// -----


// LayerNorm over the last axis: integer statistics, the quantized gamma as it is.
func.func @norm(%x: tensor<1x4x8xf32> {quantir.name = "x", quantir.range = array<f64: -2.0, 2.0>}) -> (tensor<1x4x8xf32> {quantir.name = "y"}) {
  %g = nn.constant dense<[1.0, 0.5, 1.5, 1.0, 0.75, 1.25, 1.0, 0.9]> : tensor<8xf32> {onnx_name = "gamma"}
  %b = nn.constant dense<[0.0, 0.1, -0.1, 0.2, 0.0, 0.0, -0.2, 0.05]> : tensor<8xf32> {onnx_name = "beta"}
  %y = nn.layer_norm %x, %g, %b {axis = 2 : i64, epsilon = 1.0e-05 : f32, onnx_name = "ln", quantir.ranges = [array<f64: -3.0, 3.0>]} : (tensor<1x4x8xf32>, tensor<8xf32>, tensor<8xf32>) -> tensor<1x4x8xf32>
  func.return %y : tensor<1x4x8xf32>
}

// LayerNorm: gamma's magnitudes go into the per-channel requant multipliers, only its
// signs (+-1, per-channel scales |gamma|) into the integer product, so y keeps 24
// fraction bits; beta is int32 at 2^-24 |gamma_c|; epsilon is in (s/n)^2 units:
// 1e-5 * 64 / 0.0156863^2 = 2.6 -> 3.
// CHECK-LABEL: func.func @norm
// CHECK:       %1 = q.constant dense<1> : tensor<8xi8> {onnx_name = "ln"} : tensor<8x!q.per_axis<i8:f32:0, {1.003937005996704:0, 0.4960629940032959:0, 1.5:0,
// CHECK-NEXT:  %2 = q.constant dense<[0, 3355443, -1109674, 3342285, 0, 0, -3342285, 941879]> : tensor<8xi32>
// CHECK-NEXT:  %3 = qi.layernorm %0, %1, %2 {epsilon_units = 3 : i64, fraction_bits = 24 : i64, onnx_name = "ln"}
// CHECK-NEXT:  %y = q.requant %3 {onnx_name = "ln", multiplier = array<i32: 1431677780, 1414834520, 2139095040, {{.*}}axis = 2 : i64}

// -----


// Max pool and concat: integer picks and moves; concat requantizes its inputs first.
func.func @pool_concat(%x: tensor<1x2x4x4xf32> {quantir.name = "x", quantir.range = array<f64: -1.0, 1.0>}) -> (tensor<1x4x2x2xf32> {quantir.name = "y"}) {
  %p = nn.max_pool %x {kernel_shape = array<i64: 2, 2>, strides = array<i64: 2, 2>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, ceil_mode = 0 : i64, onnx_name = "maxpool", quantir.ranges = [array<f64: -1.0, 1.0>]} : (tensor<1x2x4x4xf32>) -> tensor<1x2x2x2xf32>
  %a = nn.average_pool %x {kernel_shape = array<i64: 2, 2>, strides = array<i64: 2, 2>, pads = array<i64: 0, 0, 0, 0>, ceil_mode = 0 : i64, count_include_pad = 0 : i64, onnx_name = "avgpool", quantir.ranges = [array<f64: -0.5, 0.5>]} : (tensor<1x2x4x4xf32>) -> tensor<1x2x2x2xf32>
  %c = nn.concat %p, %a {axis = 1 : i64, onnx_name = "concat", quantir.ranges = [array<f64: -1.0, 1.0>]} : (tensor<1x2x2x2xf32>, tensor<1x2x2x2xf32>) -> tensor<1x4x2x2xf32>
  func.return %c : tensor<1x4x2x2xf32>
}

// Max pooling picks integers; average pooling is a mean at 2^-20; concat requantizes its
// inputs to its own encoding first (the max pool already has it: no requant).
// CHECK-LABEL: func.func @pool_concat
// CHECK:       %p = qi.max_pool2d %0
// CHECK-NEXT:  %1 = qi.avg_pool2d %0 {{.*}}fraction_bits = 20 : i64
// CHECK-NEXT:  %a = q.requant %1
// CHECK-NEXT:  %2 = q.requant %a {onnx_name = "concat", multiplier = 1073741824 : i32, shift = 0 : i64
// CHECK-NEXT:  %c = nn.concat %p, %2 {axis = 1 : i64, onnx_name = "concat"} : {{.*}} -> tensor<1x4x2x2x!q.uniform<i8:f32, 0.00784313725490196:0>>

// -----

// A Linear exported as MatMul + Add of a bias vector (one layer: nothing quantizes
// between them) is one product with that bias.
func.func @linear(%x: tensor<1x3x4xf32> {quantir.name = "x", quantir.range = array<f64: -1.0, 1.0>}) -> (tensor<1x3x2xf32> {quantir.name = "y"}) {
  %w = nn.constant dense<[[0.5, -0.25], [1.0, 0.0], [0.125, 0.5], [-1.0, 0.75]]> : tensor<4x2xf32> {onnx_name = "w"}
  %b = nn.constant dense<[0.5, -0.5]> : tensor<2xf32> {onnx_name = "b"}
  %m = nn.matmul %x, %w {onnx_name = "fc/MatMul", quantir.ranges = [array<f64: -2.0, 2.0>]} : (tensor<1x3x4xf32>, tensor<4x2xf32>) -> tensor<1x3x2xf32>
  %y = nn.add %b, %m {onnx_name = "fc/Add", quantir.ranges = [array<f64: -2.5, 2.5>]} : (tensor<2xf32>, tensor<1x3x2xf32>) -> tensor<1x3x2xf32>
  func.return %y : tensor<1x3x2xf32>
}
// CHECK-LABEL: func.func @linear
// CHECK:       %2 = q.constant dense<[8096, -10795]> : tensor<2xi32> {onnx_name = "fc/Add"}
// CHECK-NEXT:  %3 = qi.matmul %0, %1, %2 {onnx_name = "fc/Add"}
// CHECK-NEXT:  %y = q.requant %3
// CHECK-NEXT:  %4 = q.dequantize %y
