// RUN: quantir-opt %s -p quantize | filecheck %s
// RUN: quantir-opt %s -p 'quantize{weights=per-tensor}' | filecheck %s --check-prefix=TENSOR
// RUN: quantir-opt %s -p 'quantize{script="%inputs/conv_a16.alls"}' | filecheck %s --check-prefix=MIXED
// RUN: quantir-opt %s -p 'quantize{script="%inputs/softmax_float.alls"}' | filecheck %s --check-prefix=FLOAT

// A calibrated module (ranges as `calibrate` writes them): conv + relu is one layer.
func.func @main(%x: tensor<1x2x4x4xf32> {quantir.name = "x", quantir.range = array<f64: -1.0, 1.0>}) -> (tensor<1x3xf32> {quantir.name = "y"}) {
  %w = nn.constant dense<[[[[1.0]], [[-0.5]]], [[[0.25]], [[0.5]]], [[[-2.0]], [[1.0]]]]> : tensor<3x2x1x1xf32> {onnx_name = "w"}
  %b = nn.constant dense<[0.1, -0.2, 0.3]> : tensor<3xf32> {onnx_name = "b"}
  %c = nn.conv %x, %w, %b {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv", quantir.ranges = [array<f64: -2.5, 3.0>]} : (tensor<1x2x4x4xf32>, tensor<3x2x1x1xf32>, tensor<3xf32>) -> tensor<1x3x4x4xf32>
  %r = nn.relu %c {onnx_name = "relu", quantir.ranges = [array<f64: 0.0, 3.0>]} : (tensor<1x3x4x4xf32>) -> tensor<1x3x4x4xf32>
  %p = nn.global_average_pool %r {onnx_name = "pool", quantir.ranges = [array<f64: 0.0, 1.5>]} : (tensor<1x3x4x4xf32>) -> tensor<1x3x1x1xf32>
  %f = nn.reshape %p {shape = array<i64: 1, 3>, onnx_name = "flatten", quantir.ranges = [array<f64: 0.0, 1.5>]} : (tensor<1x3x1x1xf32>) -> tensor<1x3xf32>
  %s = nn.softmax %f {axis = 1 : i64, onnx_name = "softmax", quantir.ranges = [array<f64: 0.0, 1.0>]} : (tensor<1x3xf32>) -> tensor<1x3xf32>
  func.return %s : tensor<1x3xf32>
}

// The input is quantized once; weights are symmetric per output channel; the bias is
// int32 at s_x * s_w; the conv output inside the layer stays float.
// CHECK:      %0 = q.quantize %x {onnx_name = "x"} : tensor<1x2x4x4xf32> -> tensor<1x2x4x4x!q.uniform<i8:f32, 0.00784313725490196:0>>
// CHECK-NEXT: %1 = q.dequantize %0
// CHECK-NEXT: %2 = q.constant dense<[{{\[\[\[}}127]], {{\[\[}}-64]]], {{\[\[\[}}64]], {{\[\[}}127]]], {{\[\[\[}}-127]], {{\[\[}}64]]]]> : tensor<3x2x1x1xi8> {onnx_name = "w"} : tensor<3x2x1x1x!q.per_axis<i8:f32:0, {0.007874015748031496:0, 0.003937007874015748:0, 0.015748031496062992:0}>>
// CHECK-NEXT: %3 = q.dequantize %2
// CHECK-NEXT: %4 = q.constant dense<[1619, -6477, 2429]> : tensor<3xi32> {onnx_name = "b"} : tensor<3x!q.per_axis<i32:f32:0, {6.175698625907056e-05:0, 3.087849312953528e-05:0, 0.0001235139725181411:0}>>
// CHECK-NEXT: %5 = q.dequantize %4
// CHECK-NEXT: %c = nn.conv %1, %3, %5
// CHECK-NEXT: %r = nn.relu %c
// CHECK-NEXT: %6 = q.quantize %r {onnx_name = "r"} : tensor<1x3x4x4xf32> -> tensor<1x3x4x4x!q.uniform<i8:f32, 0.011764705882352941:-128>>
// The reshape keeps its input's encoding; the model output is dequantized.
// CHECK:      %f = nn.reshape %9
// CHECK-NEXT: %10 = q.quantize %f {onnx_name = "f"} : tensor<1x3xf32> -> tensor<1x3x!q.uniform<i8:f32, 0.0058823529411764705:-128>>
// CHECK:      func.return %13

// TENSOR: q.constant {{.*}} {onnx_name = "w"} : tensor<3x2x1x1x!q.uniform<i8:f32, 0.015748031496062992:0>>
// TENSOR: q.constant {{.*}} {onnx_name = "b"} : tensor<3x!q.uniform<i32:f32, 0.0001235139725181411:0>>

// The 16-bit conv layer writes 16 bits; the 8-bit pool reads 8: a named precision change.
// MIXED:      q.quantize %x {onnx_name = "x"} : tensor<1x2x4x4xf32> -> tensor<1x2x4x4x!q.uniform<i16:f32,
// MIXED:      q.constant {{.*}} {onnx_name = "w"} : tensor<3x2x1x1x!q.per_axis<i16:f32:0,
// MIXED:      %[[OUT:.*]] = q.quantize %r {onnx_name = "r"} : tensor<1x3x4x4xf32> -> tensor<1x3x4x4x!q.uniform<i16:f32,
// MIXED-NEXT: %[[CHANGE:.*]] = q.precision_change %[[OUT]] {onnx_name = "r.to_8bit", producer = "conv", consumer = "pool", reason = "conv writes 16 bits ({{.*}}conv_a16.alls:1); pool reads 8 bits (default)"} : tensor<1x3x4x4x!q.uniform<i16:f32, {{.*}}>> -> tensor<1x3x4x4x!q.uniform<i8:f32, 0.011764705882352941:-128>>
// MIXED-NEXT: q.dequantize %[[CHANGE]]

// A layer left in float reads dequantized values and writes float.
// FLOAT:      %[[IN:.*]] = q.dequantize %{{.*}} {onnx_name = "f"}
// FLOAT-NEXT: %s = nn.softmax %[[IN]]
// FLOAT-NEXT: func.return %s : tensor<1x3xf32>
