// RUN: quantir-opt %s --split-input-file --parsing-diagnostics --verify-diagnostics | filecheck %s

// Type errors are reported while parsing (with the location of the bad token),
// op errors by the verifier (naming the op and its ONNX node).

func.func @f(%arg0: tensor<4x!q.uniform<i8:f32, 0.05:-300>>) {
  func.return
}

// CHECK: zero point -300 is outside the i8 storage range [-128, 127]

// -----

func.func @f(%arg0: tensor<4x!q.uniform<u8:f32, 0.05:256>>) {
  func.return
}

// CHECK: zero point 256 is outside the u8 storage range [0, 255]

// -----

func.func @f(%arg0: tensor<4x!q.uniform<i4:f32, 0.05:8>>) {
  func.return
}

// CHECK: zero point 8 is outside the i4 storage range [-8, 7]

// -----

func.func @f(%arg0: tensor<4x!q.uniform<u4:f32, 0.05:-1>>) {
  func.return
}

// CHECK: zero point -1 is outside the u4 storage range [0, 15]

// -----

func.func @f(%arg0: tensor<4x!q.uniform<i8:f32, 0.0:0>>) {
  func.return
}

// CHECK: scale 0.0 must be positive and finite

// -----

func.func @f(%arg0: tensor<4x!q.uniform<i8:f32, -0.5:0>>) {
  func.return
}

// CHECK: scale -0.5 must be positive and finite

// -----

func.func @f(%arg0: tensor<4x!q.uniform<i8:f32, 1.0e999:0>>) {
  func.return
}

// CHECK: scale inf must be positive and finite

// -----

func.func @f(%arg0: tensor<4x!q.uniform<i12:f32, 0.5:0>>) {
  func.return
}

// CHECK: unsupported storage width 12 (i12): expected one of i4, i8, i16, i32, u4, u8, u16, u32

// -----

func.func @f(%arg0: tensor<4x!q.uniform<ui8:f32, 0.5:0>>) {
  func.return
}

// CHECK: unknown storage type 'ui8': expected one of i4, i8, i16, i32, u4, u8, u16, u32

// -----

func.func @f(%arg0: tensor<4x!q.uniform<i8:f64, 0.5:0>>) {
  func.return
}

// CHECK: unsupported expressed type f64: expected f32 or f16

// -----

func.func @f(%arg0: tensor<4x!q.per_axis<i8:f32:-1, {0.5:0}>>) {
  func.return
}

// CHECK: axis -1 must be non-negative

// -----

func.func @f(%arg0: tensor<4x!q.per_axis<i8:f32:0, {}>>) {
  func.return
}

// CHECK: needs at least one scale:zero_point pair

// -----

func.func @f(%arg0: tensor<4x8xf32>) {
  %0 = q.quantize %arg0 {onnx_name = "conv1.weight"} : tensor<4x8xf32> -> tensor<4x8x!q.per_axis<i8:f32:2, {0.1:0, 0.2:0, 0.3:0, 0.4:0}>>
  func.return
}

// CHECK: q.quantize 'conv1.weight': result: per-axis axis 2 is outside the rank 2 of tensor<4x8x!q.per_axis<i8:f32:2, {0.1:0, 0.2:0, 0.3:0, 0.4:0}>>

// -----

func.func @f(%arg0: tensor<4x8xf32>) {
  %0 = q.quantize %arg0 {onnx_name = "conv1.weight"} : tensor<4x8xf32> -> tensor<4x8x!q.per_axis<i8:f32:0, {0.1:0, 0.2:0}>>
  func.return
}

// CHECK: q.quantize 'conv1.weight': result: 2 per-axis scales for dimension 0 of size 4

// -----

func.func @f(%arg0: tensor<4xf16>) {
  %0 = q.quantize %arg0 {onnx_name = "conv1"} : tensor<4xf16> -> tensor<4x!q.uniform<i8:f32, 0.05:-3>>
  func.return
}

// CHECK: q.quantize 'conv1': expressed type f32 of the result does not match the input element type f16

// -----

func.func @f(%arg0: tensor<4xf32>) {
  %0 = q.quantize %arg0 {onnx_name = "conv1"} : tensor<4xf32> -> tensor<2x2x!q.uniform<i8:f32, 0.05:-3>>
  func.return
}

// CHECK: q.quantize 'conv1': input shape [4] and result shape [2, 2] differ

// -----

func.func @f(%arg0: tensor<4xf32>) {
  %0 = q.quantize %arg0 {onnx_name = "conv1"} : tensor<4xf32> -> tensor<4xi8>
  func.return
}

// CHECK: q.quantize 'conv1': result must be a tensor of a quantized type, got tensor<4xi8>

// -----

func.func @f(%arg0: tensor<4x!q.uniform<i8:f32, 0.05:-3>>) {
  %0 = q.dequantize %arg0 {onnx_name = "conv1"} : tensor<4x!q.uniform<i8:f32, 0.05:-3>> -> tensor<4xf16>
  func.return
}

// CHECK: q.dequantize 'conv1': result element type f16 does not match the expressed type f32 of the input

// -----

func.func @f(%arg0: tensor<4xi8>) {
  %0 = q.dequantize %arg0 {onnx_name = "conv1"} : tensor<4xi8> -> tensor<4xf32>
  func.return
}

// CHECK: q.dequantize 'conv1': input must be a tensor of a quantized type, got tensor<4xi8>

// -----

func.func @f(%arg0: tensor<4xi32>) {
  %0 = q.requant %arg0 {onnx_name = "conv1", multiplier = -1 : i32, shift = 0 : i64, rounding = "tflite"} : tensor<4xi32> -> tensor<4x!q.uniform<i8:f32, 0.05:-3>>
  func.return
}

// CHECK: q.requant 'conv1': multiplier -1 is outside the Q31 range [0, 2147483647]

// -----

func.func @f(%arg0: tensor<4xi32>) {
  %0 = q.requant %arg0 {onnx_name = "conv1", multiplier = 1073741824 : i32, shift = 32 : i64, rounding = "tflite"} : tensor<4xi32> -> tensor<4x!q.uniform<i8:f32, 0.05:-3>>
  func.return
}

// CHECK: q.requant 'conv1': shift 32 is outside [-31, 31] for rounding 'tflite' (positive shifts left)

// -----

func.func @f(%arg0: tensor<4xi32>) {
  %0 = q.requant %arg0 {onnx_name = "conv1", multiplier = 1073741824 : i32, shift = -32 : i64, rounding = "tflite"} : tensor<4xi32> -> tensor<4x!q.uniform<i8:f32, 0.05:-3>>
  func.return
}

// CHECK: q.requant 'conv1': shift -32 is outside [-31, 31] for rounding 'tflite' (positive shifts left)

// -----

func.func @f(%arg0: tensor<4xi32>) {
  %0 = q.requant %arg0 {onnx_name = "conv1", multiplier = 1073741824 : i32, shift = 30 : i64, rounding = "tosa"} : tensor<4xi32> -> tensor<4x!q.uniform<i8:f32, 0.05:-3>>
  func.return
}

// CHECK: q.requant 'conv1': shift 30 is outside [-31, 29] for rounding 'tosa' (positive shifts left)

// -----

func.func @f(%arg0: tensor<4xi32>) {
  %0 = q.requant %arg0 {onnx_name = "conv1", multiplier = 1073741824 : i32, shift = 0 : i64, rounding = "upward"} : tensor<4xi32> -> tensor<4x!q.uniform<i8:f32, 0.05:-3>>
  func.return
}

// CHECK: q.requant 'conv1': unknown rounding mode 'upward': expected one of tflite, single, tosa

// -----

func.func @f(%arg0: tensor<4xui32>) {
  %0 = q.requant %arg0 {onnx_name = "conv1", multiplier = 1073741824 : i32, shift = 0 : i64, rounding = "tflite"} : tensor<4xui32> -> tensor<4x!q.uniform<i8:f32, 0.05:-3>>
  func.return
}

// CHECK: q.requant 'conv1': input must be a tensor of a quantized type or of signless / signed integers, got tensor<4xui32>

// -----

func.func @f(%arg0: tensor<1x4xi32>) {
  %0 = q.requant %arg0 {onnx_name = "conv1", multiplier = array<i32: 1, 2, 3>, shift = array<i64: 0, 0, 0>, rounding = "tflite", axis = 1 : i64} : tensor<1x4xi32> -> tensor<1x4x!q.uniform<i8:f32, 0.05:-3>>
  func.return
}

// CHECK: q.requant 'conv1': 3 multipliers for dimension 1 of size 4

// -----

func.func @f(%arg0: tensor<1x4xi32>) {
  %0 = q.requant %arg0 {onnx_name = "conv1", multiplier = array<i32: 1, 2, 3, 4>, shift = array<i64: 0, 0, 0, 0>, rounding = "tflite"} : tensor<1x4xi32> -> tensor<1x4x!q.uniform<i8:f32, 0.05:-3>>
  func.return
}

// CHECK: q.requant 'conv1': per-channel multipliers need an axis

// -----

func.func @f(%arg0: tensor<4x!q.uniform<i8:f32, 0.05:-3>>) {
  %0 = q.precision_change %arg0 {onnx_name = "fc1", producer = "conv1", consumer = "fc1"} : tensor<4x!q.uniform<i8:f32, 0.05:-3>> -> tensor<4x!q.uniform<i8:f32, 0.1:0>>
  func.return
}

// CHECK: q.precision_change 'fc1': storage widths are equal (i8 -> i8): use q.requant to change scale or zero point at one width

// -----

func.func @f(%arg0: tensor<4x!q.uniform<i16:f32, 0.001:0>>) {
  %0 = q.precision_change %arg0 {onnx_name = "fc1", producer = "conv1", consumer = "fc1"} : tensor<4x!q.uniform<i16:f32, 0.001:0>> -> tensor<4x!q.uniform<i8:f16, 0.05:-3>>
  func.return
}

// CHECK: q.precision_change 'fc1': expressed types differ: f32 -> f16
