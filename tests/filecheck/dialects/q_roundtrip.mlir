// RUN: quantir-opt %s | quantir-opt | filecheck %s
// RUN: quantir-opt %s --print-op-generic | quantir-opt | filecheck %s

// The q dialect's types and ops print back exactly as written (custom and generic form).

func.func @quantize_dequantize(%arg0: tensor<1x8x8x8xf32>) -> tensor<1x8x8x8xf32> {
  %0 = q.quantize %arg0 {onnx_name = "conv1"} : tensor<1x8x8x8xf32> -> tensor<1x8x8x8x!q.uniform<i8:f32, 0.05:-3>>
  %1 = q.dequantize %0 {onnx_name = "conv1"} : tensor<1x8x8x8x!q.uniform<i8:f32, 0.05:-3>> -> tensor<1x8x8x8xf32>
  func.return %1 : tensor<1x8x8x8xf32>
}

// CHECK:      builtin.module {
// CHECK-NEXT:   func.func @quantize_dequantize(%arg0: tensor<1x8x8x8xf32>) -> tensor<1x8x8x8xf32> {
// CHECK-NEXT:     %0 = q.quantize %arg0 {onnx_name = "conv1"} : tensor<1x8x8x8xf32> -> tensor<1x8x8x8x!q.uniform<i8:f32, 0.05:-3>>
// CHECK-NEXT:     %1 = q.dequantize %0 {onnx_name = "conv1"} : tensor<1x8x8x8x!q.uniform<i8:f32, 0.05:-3>> -> tensor<1x8x8x8xf32>
// CHECK-NEXT:     func.return %1 : tensor<1x8x8x8xf32>
// CHECK-NEXT:   }

// Every storage type; scales print as the shortest exact decimal (1.0e-05, not 1e-05).
func.func @storage_types(%a: tensor<4x!q.uniform<i4:f32, 0.5:-8>>, %b: tensor<4x!q.uniform<u4:f32, 1.0e-05:15>>, %c: tensor<4x!q.uniform<i16:f16, 3.0517578125e-05:0>>, %d: tensor<4x!q.uniform<u16:f32, 0.30000000000000004:32768>>, %e: tensor<4x!q.uniform<i32:f32, 1.0e+20:-2147483648>>, %f: tensor<4x!q.uniform<u32:f32, 5.0e-324:4294967295>>) {
  func.return
}

// CHECK-NEXT:   func.func @storage_types(%a: tensor<4x!q.uniform<i4:f32, 0.5:-8>>, %b: tensor<4x!q.uniform<u4:f32, 1.0e-05:15>>, %c: tensor<4x!q.uniform<i16:f16, 3.0517578125e-05:0>>, %d: tensor<4x!q.uniform<u16:f32, 0.30000000000000004:32768>>, %e: tensor<4x!q.uniform<i32:f32, 1.0e+20:-2147483648>>, %f: tensor<4x!q.uniform<u32:f32, 5.0e-324:4294967295>>) {
// CHECK-NEXT:     func.return
// CHECK-NEXT:   }

// Per-channel weights: one scale:zero_point pair per index of the axis.
func.func @per_axis(%arg0: tensor<3x1x2x2xf16>) -> tensor<3x1x2x2xf16> {
  %0 = q.quantize %arg0 {onnx_name = "conv1.weight"} : tensor<3x1x2x2xf16> -> tensor<3x1x2x2x!q.per_axis<i8:f16:0, {0.1:0, 0.2:0, 0.0125:0}>>
  %1 = q.dequantize %0 {onnx_name = "conv1.weight"} : tensor<3x1x2x2x!q.per_axis<i8:f16:0, {0.1:0, 0.2:0, 0.0125:0}>> -> tensor<3x1x2x2xf16>
  func.return %1 : tensor<3x1x2x2xf16>
}

// CHECK-NEXT:   func.func @per_axis(%arg0: tensor<3x1x2x2xf16>) -> tensor<3x1x2x2xf16> {
// CHECK-NEXT:     %0 = q.quantize %arg0 {onnx_name = "conv1.weight"} : tensor<3x1x2x2xf16> -> tensor<3x1x2x2x!q.per_axis<i8:f16:0, {0.1:0, 0.2:0, 0.0125:0}>>
// CHECK-NEXT:     %1 = q.dequantize %0 {onnx_name = "conv1.weight"} : tensor<3x1x2x2x!q.per_axis<i8:f16:0, {0.1:0, 0.2:0, 0.0125:0}>> -> tensor<3x1x2x2xf16>
// CHECK-NEXT:     func.return %1 : tensor<3x1x2x2xf16>
// CHECK-NEXT:   }

// Integer rescale of an i32 accumulator (per tensor and per channel) and of a q tensor.
func.func @requant(%acc: tensor<1x2x4x4xi32>, %x: tensor<1x2x4x4x!q.uniform<u8:f32, 0.1:128>>) {
  %0 = q.requant %acc {onnx_name = "conv2", multiplier = 1518500250 : i32, shift = -7 : i64, rounding = "tflite"} : tensor<1x2x4x4xi32> -> tensor<1x2x4x4x!q.uniform<i8:f32, 0.05:-3>>
  %1 = q.requant %acc {onnx_name = "conv2", multiplier = array<i32: 1073741824, 2147483647>, shift = array<i64: -31, 0>, rounding = "single", axis = 1 : i64} : tensor<1x2x4x4xi32> -> tensor<1x2x4x4x!q.uniform<i8:f32, 0.05:-3>>
  %2 = q.requant %x {onnx_name = "add1", multiplier = 0 : i32, shift = 29 : i64, rounding = "tosa"} : tensor<1x2x4x4x!q.uniform<u8:f32, 0.1:128>> -> tensor<1x2x4x4x!q.uniform<i8:f32, 0.05:-3>>
  func.return
}

// CHECK-NEXT:   func.func @requant(%acc: tensor<1x2x4x4xi32>, %x: tensor<1x2x4x4x!q.uniform<u8:f32, 0.1:128>>) {
// CHECK-NEXT:     %0 = q.requant %acc {onnx_name = "conv2", multiplier = 1518500250 : i32, shift = -7 : i64, rounding = "tflite"} : tensor<1x2x4x4xi32> -> tensor<1x2x4x4x!q.uniform<i8:f32, 0.05:-3>>
// CHECK-NEXT:     %1 = q.requant %acc {onnx_name = "conv2", multiplier = array<i32: 1073741824, 2147483647>, shift = array<i64: -31, 0>, rounding = "single", axis = 1 : i64} : tensor<1x2x4x4xi32> -> tensor<1x2x4x4x!q.uniform<i8:f32, 0.05:-3>>
// CHECK-NEXT:     %2 = q.requant %x {onnx_name = "add1", multiplier = 0 : i32, shift = 29 : i64, rounding = "tosa"} : tensor<1x2x4x4x!q.uniform<u8:f32, 0.1:128>> -> tensor<1x2x4x4x!q.uniform<i8:f32, 0.05:-3>>
// CHECK-NEXT:     func.return
// CHECK-NEXT:   }

// A precision change between two layers, with and without the configuration line behind it.
func.func @precision_change(%arg0: tensor<1x16x!q.uniform<i16:f32, 0.001:0>>) -> tensor<1x16x!q.uniform<i16:f32, 0.001:0>> {
  %0 = q.precision_change %arg0 {onnx_name = "fc1", producer = "ln1", consumer = "fc1", reason = "precision fc1 = a8_w8 (config.toml:4)"} : tensor<1x16x!q.uniform<i16:f32, 0.001:0>> -> tensor<1x16x!q.uniform<i8:f32, 0.05:-3>>
  %1 = q.precision_change %0 {onnx_name = "fc2", producer = "fc1", consumer = "fc2"} : tensor<1x16x!q.uniform<i8:f32, 0.05:-3>> -> tensor<1x16x!q.uniform<i16:f32, 0.001:0>>
  func.return %1 : tensor<1x16x!q.uniform<i16:f32, 0.001:0>>
}

// CHECK-NEXT:   func.func @precision_change(%arg0: tensor<1x16x!q.uniform<i16:f32, 0.001:0>>) -> tensor<1x16x!q.uniform<i16:f32, 0.001:0>> {
// CHECK-NEXT:     %0 = q.precision_change %arg0 {onnx_name = "fc1", producer = "ln1", consumer = "fc1", reason = "precision fc1 = a8_w8 (config.toml:4)"} : tensor<1x16x!q.uniform<i16:f32, 0.001:0>> -> tensor<1x16x!q.uniform<i8:f32, 0.05:-3>>
// CHECK-NEXT:     %1 = q.precision_change %0 {onnx_name = "fc2", producer = "fc1", consumer = "fc2"} : tensor<1x16x!q.uniform<i8:f32, 0.05:-3>> -> tensor<1x16x!q.uniform<i16:f32, 0.001:0>>
// CHECK-NEXT:     func.return %1 : tensor<1x16x!q.uniform<i16:f32, 0.001:0>>
// CHECK-NEXT:   }
// CHECK-NEXT: }
