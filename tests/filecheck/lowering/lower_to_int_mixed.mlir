// RUN: quantir-opt %s -p 'quantize{script="%inputs/conv_a16.alls"},lower-to-int' | filecheck %s --check-prefix=A16
// RUN: quantir-opt %s -p 'quantize{script="%inputs/softmax_float.alls"},lower-to-int' 2>&1 | filecheck %s --check-prefix=FLOAT
// RUN: not quantir-opt %s -p lower-to-int 2>&1 | filecheck %s --check-prefix=UNQUANTIZED
// RUN: not quantir-opt %s -p 'quantize,lower-to-int{rounding=up}' 2>&1 | filecheck %s --check-prefix=ROUNDING

func.func @main(%x: tensor<1x2x4x4xf32> {quantir.name = "x", quantir.range = array<f64: -1.0, 1.0>}) -> (tensor<1x3xf32> {quantir.name = "y"}) {
  %w = nn.constant dense<[[[[1.0]], [[-0.5]]], [[[0.25]], [[0.5]]], [[[-2.0]], [[1.0]]]]> : tensor<3x2x1x1xf32> {onnx_name = "w"}
  %b = nn.constant dense<[0.1, -0.2, 0.3]> : tensor<3xf32> {onnx_name = "b"}
  %c = nn.conv %x, %w, %b {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv", activation = "relu", quantir.ranges = [array<f64: 0.0, 3.0>]} : (tensor<1x2x4x4xf32>, tensor<3x2x1x1xf32>, tensor<3xf32>) -> tensor<1x3x4x4xf32>
  %p = nn.global_average_pool %c {onnx_name = "pool", quantir.ranges = [array<f64: 0.0, 1.5>]} : (tensor<1x3x4x4xf32>) -> tensor<1x3x1x1xf32>
  %f = nn.reshape %p {shape = array<i64: 1, 3>, onnx_name = "flatten", quantir.ranges = [array<f64: 0.0, 1.5>]} : (tensor<1x3x1x1xf32>) -> tensor<1x3xf32>
  %s = nn.softmax %f {axis = 1 : i64, onnx_name = "softmax", quantir.ranges = [array<f64: 0.0, 1.0>]} : (tensor<1x3xf32>) -> tensor<1x3xf32>
  func.return %s : tensor<1x3xf32>
}

// A 16 x 16-bit conv cannot accumulate in 32 bits: x and w are split into bytes,
// x - zp = 256 (hi - zh) + (lo - zl) (hi i8, lo u8), four 8-bit products are requantized
// to a common scale 2^-14 of the output LSB and added, with the bias, in 32 bits.
// A16:      %0 = q.quantize %x {{.*}} -> tensor<1x2x4x4x!q.uniform<i16:f32, 3.0518043793392844e-05:0>>
// A16-NEXT: %1 = qi.lookup %0 {onnx_name = "conv", table = {{.*}} : tensor<65536xi8>} : {{.*}} -> tensor<1x2x4x4x!q.uniform<i8:f32, 0.007812619211108568:0>>
// A16-NEXT: %2 = qi.lookup %0 {onnx_name = "conv", table = {{.*}} : tensor<65536xui8>} : {{.*}} -> tensor<1x2x4x4x!q.uniform<u8:f32, 3.0518043793392844e-05:0>>
// A16-NEXT: %3 = q.constant dense<[{{\[\[\[}}127]], {{\[\[}}-64]]], {{\[\[\[}}64]], {{\[\[}}127]]], {{\[\[\[}}-128]], {{\[\[}}64]]]]> : tensor<3x2x1x1xi8>
// A16-NEXT: %4 = q.constant dense<[{{\[\[\[}}255]], {{\[\[}}0]]], {{\[\[\[}}0]], {{\[\[}}255]]], {{\[\[\[}}1]], {{\[\[}}0]]]]> : tensor<3x2x1x1xui8>
// A16-COUNT-4: qi.conv2d
// A16:      %13 = q.constant dense<{{\[\[\[}}35790849]], {{\[\[}}-71581697]], {{\[\[}}107372548]]]> : tensor<3x1x1xi32> {onnx_name = "conv"} : tensor<3x1x1x!q.uniform<i32:f32, 2.7940103570611124e-09:0>>
// A16-COUNT-4: qi.add
// A16-NEXT: %c = q.requant %17 {{.*}} -> tensor<1x3x4x4x!q.uniform<i16:f32, 4.5777065690089265e-05:-32768>>
// The 16 -> 8-bit precision change is the requant it stands for.
// A16-NEXT: %18 = q.requant %c {onnx_name = "c.to_8bit", multiplier = 2139127680 : i32, shift = -8 : i64
// A16-NEXT: %19 = qi.reduce_mean %18

// A layer the configuration keeps in float stays between its dequantize and quantize,
// and the pass says so.
// FLOAT:      lower-to-int: nn.softmax 'softmax' stays in float: the annotated module runs it in float
// FLOAT:      %5 = q.dequantize %f
// FLOAT-NEXT: %s = nn.softmax %5

// UNQUANTIZED: quantir-opt: error: lower-to-int: the module has no q.quantize ops; quantize it first
// ROUNDING: quantir-opt: error: lower-to-int: unknown rounding 'up'; expected one of tflite, single, tosa
