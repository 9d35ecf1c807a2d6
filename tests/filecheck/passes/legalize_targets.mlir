// legalize on every shipped target. First module: conv + relu, pool, flatten, gemm,
// softmax, with the conv in a16_w16 (inputs/conv_a16.alls) or the softmax in float
// (inputs/softmax_float.alls). Second module (a GELU piece: div, erf, mul): ops some
// targets have no integer form of. Each change is a warning; legality runs after.

// The changes go to stderr, the IR to a file: each is checked on its own.
// cpu-ref: nothing to repair.
// RUN: quantir-opt %s --split-input-file -p 'quantize{script="%inputs/conv_a16.alls"},legalize{target=cpu-ref},legality{target=cpu-ref}' -o %t.cpu.mlir 2>&1 | filecheck %s --allow-empty --check-prefix=QUIET
// RUN: filecheck %s --check-prefix=CPU < %t.cpu.mlir
// hailo8: the 16 -> 8 bit change after the conv is folded into it; per-tensor weights;
// unsigned activations.
// RUN: quantir-opt %s --split-input-file -p 'quantize{script="%inputs/conv_a16.alls"},legalize{target=hailo8},legality{target=hailo8}' -o %t.hailo.mlir 2>&1 | filecheck %s --check-prefix=HAILO-LOG
// RUN: filecheck %s --check-prefix=HAILO < %t.hailo.mlir
// horizon-j6 and sima-mla: no a16_w16 conv: a16_w8 keeps the 16-bit activations.
// RUN: quantir-opt %s --split-input-file -p 'quantize{script="%inputs/conv_a16.alls"},legalize{target=horizon-j6},legality{target=horizon-j6}' -o %t.j6.mlir 2>&1 | filecheck %s --check-prefix=A16W8-LOG
// RUN: filecheck %s --check-prefix=A16W8 < %t.j6.mlir
// RUN: quantir-opt %s --split-input-file -p 'quantize{script="%inputs/conv_a16.alls"},legalize{target=sima-mla},legality{target=sima-mla}' -o %t.sima.mlir 2>&1 | filecheck %s --check-prefix=A16W8-LOG
// RUN: filecheck %s --check-prefix=A16W8 < %t.sima.mlir
// qnn-htp: runs a16_w16; only the signedness changes.
// RUN: quantir-opt %s --split-input-file -p 'quantize{script="%inputs/conv_a16.alls"},legalize{target=qnn-htp},legality{target=qnn-htp}' -o %t.qnn.mlir 2>&1 | filecheck %s --check-prefix=QNN-LOG
// RUN: filecheck %s --check-prefix=QNN < %t.qnn.mlir
// tflite-int8: int8 only (the model input folds to 8 bits); per-tensor FULLY_CONNECTED;
// div and erf have no int8 kernel: they run in float on the CPU.
// RUN: quantir-opt %s --split-input-file -p 'quantize{script="%inputs/conv_a16.alls"},legalize{target=tflite-int8 report=-},legality{target=tflite-int8}' -o %t.tflite.mlir 2>&1 | filecheck %s --check-prefix=TFLITE-LOG
// RUN: filecheck %s --check-prefix=TFLITE < %t.tflite.mlir
// A float softmax: horizon-j6 runs it in fp16; hailo8 cannot run it (no float
// fallback) and legalize never quantizes a layer the configuration left in float.
// RUN: quantir-opt %s --split-input-file -p 'quantize{script="%inputs/softmax_float.alls"},legalize{target=horizon-j6},legality{target=horizon-j6}' -o %t.fp16.mlir 2>&1 | filecheck %s --allow-empty --check-prefix=QUIET
// RUN: not quantir-opt %s --split-input-file -p 'quantize{script="%inputs/softmax_float.alls"},legalize{target=hailo8}' -o %t.none.mlir 2>&1 | filecheck %s --check-prefix=CANNOT
// RUN: not ls %t.none.mlir
// RUN: quantir-opt %s --split-input-file -p 'quantize{script="%inputs/softmax_float.alls"},legalize{target=hailo8 mode=report}' 2>&1 >/dev/null | filecheck %s --check-prefix=REPORT

func.func @main(%x: tensor<1x2x4x4xf32> {quantir.name = "x", quantir.range = array<f64: -1.0, 1.0>}) -> (tensor<1x3xf32> {quantir.name = "y"}) {
  %w = nn.constant dense<[[[[1.0]], [[-0.5]]], [[[0.25]], [[0.5]]], [[[-2.0]], [[1.0]]]]> : tensor<3x2x1x1xf32> {onnx_name = "w"}
  %b = nn.constant dense<[0.1, -0.2, 0.3]> : tensor<3xf32> {onnx_name = "b"}
  %c = nn.conv %x, %w, %b {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv", quantir.ranges = [array<f64: -2.5, 3.0>]} : (tensor<1x2x4x4xf32>, tensor<3x2x1x1xf32>, tensor<3xf32>) -> tensor<1x3x4x4xf32>
  %r = nn.relu %c {onnx_name = "relu", quantir.ranges = [array<f64: 0.0, 3.0>]} : (tensor<1x3x4x4xf32>) -> tensor<1x3x4x4xf32>
  %p = nn.global_average_pool %r {onnx_name = "pool", quantir.ranges = [array<f64: 0.0, 1.5>]} : (tensor<1x3x4x4xf32>) -> tensor<1x3x1x1xf32>
  %f = nn.reshape %p {shape = array<i64: 1, 3>, onnx_name = "flatten", quantir.ranges = [array<f64: 0.0, 1.5>]} : (tensor<1x3x1x1xf32>) -> tensor<1x3xf32>
  %wf = nn.constant dense<[[0.5, -0.25, 1.0], [1.0, 0.5, -0.5], [-1.0, 0.25, 0.75]]> : tensor<3x3xf32> {onnx_name = "fc.weight"}
  %bf = nn.constant dense<[0.0, 0.1, -0.1]> : tensor<3xf32> {onnx_name = "fc.bias"}
  %g = nn.gemm %f, %wf, %bf {alpha = 1.0 : f32, beta = 1.0 : f32, trans_a = 0 : i64, trans_b = 1 : i64, onnx_name = "fc", quantir.ranges = [array<f64: -2.0, 2.0>]} : (tensor<1x3xf32>, tensor<3x3xf32>, tensor<3xf32>) -> tensor<1x3xf32>
  %s = nn.softmax %g {axis = 1 : i64, onnx_name = "softmax", quantir.ranges = [array<f64: 0.0, 1.0>]} : (tensor<1x3xf32>) -> tensor<1x3xf32>
  func.return %s : tensor<1x3xf32>
}

// -----

func.func @main(%x: tensor<1x4xf32> {quantir.name = "x", quantir.range = array<f64: -2.0, 2.0>}) -> (tensor<1x4xf32> {quantir.name = "y"}) {
  %c = nn.constant dense<1.41421354> : tensor<f32> {onnx_name = "sqrt2"}
  %d = nn.div %x, %c {onnx_name = "div", quantir.ranges = [array<f64: -1.5, 1.5>]} : (tensor<1x4xf32>, tensor<f32>) -> tensor<1x4xf32>
  %e = nn.erf %d {onnx_name = "erf", quantir.ranges = [array<f64: -0.97, 0.97>]} : (tensor<1x4xf32>) -> tensor<1x4xf32>
  %m = nn.mul %x, %e {onnx_name = "mul", quantir.ranges = [array<f64: -2.0, 2.0>]} : (tensor<1x4xf32>, tensor<1x4xf32>) -> tensor<1x4xf32>
  func.return %m : tensor<1x4xf32>
}

// QUIET-NOT: {{(warning|error)}}:

// CPU:      q.precision_change %{{.*}} {onnx_name = "r.to_8bit", producer = "conv", consumer = "pool"
// CPU:      {{//}} -----
// CPU:      nn.erf

// HAILO-LOG:      quantir-opt: warning: legalize{target=hailo8}: q.quantize '7 activation tensors': re-expressed on unsigned storage (zero points moved by 2^(bits-1); the values are unchanged) for hailo8
// HAILO-LOG-NEXT: quantir-opt: warning: legalize{target=hailo8}: nn.conv 'conv': precision_mode a16_w16 (weights re-quantized to 16 bits per tensor; bias re-quantized (i32)) for hailo8
// HAILO-LOG-NEXT: quantir-opt: warning: legalize{target=hailo8}: nn.gemm 'fc': precision_mode a8_w8 (weights re-quantized to 8 bits per tensor; bias re-quantized (i32)) for hailo8
// HAILO-LOG-NEXT: quantir-opt: warning: legalize{target=hailo8}: q.precision_change 'r.to_8bit': folded into conv: precision_mode a16_w16 -> a16_w16_a8 (writes u8); pool reads it as before
// HAILO-LOG-NEXT: quantir-opt: warning: legalize{target=hailo8}: q.quantize '4 activation tensors': re-expressed on unsigned storage
// HAILO-LOG-NOT:  error:
// HAILO:      q.quantize %x {onnx_name = "x"} : tensor<1x2x4x4xf32> -> tensor<1x2x4x4x!q.uniform<u16:f32, 3.0518043793392844e-05:32768>>
// HAILO:      q.constant {{.*}} {onnx_name = "w"} : tensor<3x2x1x1x!q.uniform<i16:f32,
// HAILO:      %[[OUT:.*]] = q.quantize %r {onnx_name = "r"} : tensor<1x3x4x4xf32> -> tensor<1x3x4x4x!q.uniform<u8:f32, 0.011764705882352941:0>>
// HAILO-NEXT: q.dequantize %[[OUT]]
// HAILO-NOT:  q.precision_change
// HAILO:      q.constant {{.*}} {onnx_name = "fc.weight"} : tensor<3x3x!q.uniform<i8:f32,
// HAILO:      {{//}} -----
// HAILO:      q.quantize %x {onnx_name = "x"} : tensor<1x4xf32> -> tensor<1x4x!q.uniform<u8:f32,

// A16W8-LOG:     legalize{target={{horizon-j6|sima-mla}}}: nn.conv 'conv': precision_mode a16_w16 -> a16_w8 (weights re-quantized to 8 bits per channel; bias re-quantized (i32)) for {{horizon-j6|sima-mla}}
// A16W8-LOG-NOT: error:
// A16W8:         q.quantize %x {onnx_name = "x"} : tensor<1x2x4x4xf32> -> tensor<1x2x4x4x!q.uniform<i16:f32,
// A16W8:         q.constant {{.*}} {onnx_name = "w"} : tensor<3x2x1x1x!q.per_axis<i8:f32:0,
// A16W8:         q.precision_change %{{.*}} {onnx_name = "r.to_8bit", {{.*}} : tensor<1x3x4x4x!q.uniform<i16:f32, {{.*}}>> -> tensor<1x3x4x4x!q.uniform<i8:f32,

// QNN-LOG:      legalize{target=qnn-htp}: q.quantize '7 activation tensors': re-expressed on unsigned storage
// QNN-LOG-NOT:  legalize{target=qnn-htp}: nn.
// QNN:          q.constant {{.*}} {onnx_name = "w"} : tensor<3x2x1x1x!q.per_axis<i16:f32:0,
// QNN:          q.precision_change %{{.*}} : tensor<1x3x4x4x!q.uniform<u16:f32, {{.*}}>> -> tensor<1x3x4x4x!q.uniform<u8:f32,

// TFLITE-LOG:      legalize{target=tflite-int8}: nn.conv 'conv': precision_mode a16_w16 -> a8_w8 (reads operand 0 at 8 bits; weights re-quantized to 8 bits per channel; bias re-quantized (i32); writes i8) for tflite-int8
// TFLITE-LOG-NEXT: legalize{target=tflite-int8}: nn.gemm 'fc': precision_mode a8_w8 (weights re-quantized to 8 bits per tensor; bias re-quantized (i32)) for tflite-int8
// TFLITE-LOG-NEXT: legalize{target=tflite-int8}: q.precision_change 'x.to_8bit': folded into the input quantization of x, which now writes i8; conv reads it as before
// TFLITE-LOG-NEXT: {
// TFLITE-LOG-NEXT:   "target": "tflite-int8",
// TFLITE-LOG:      "legal": true,
// TFLITE-LOG:      legalize{target=tflite-int8}: nn.div 'div': runs in float on cpu (tflite-int8 has no integer div); it reads its inputs dequantized; its constants keep their quantized values, in float
// TFLITE-LOG-NEXT: legalize{target=tflite-int8}: nn.erf 'erf': runs in float on cpu (tflite-int8 has no integer erf); it reads its inputs dequantized
// TFLITE-LOG-NEXT: {
// TFLITE-LOG-NEXT:   "target": "tflite-int8",
// TFLITE-LOG-NEXT:   "target_file": "{{.*}}tflite-int8.toml",
// TFLITE-LOG-NEXT:   "legal": true,
// TFLITE:      q.quantize %x {onnx_name = "x"} : tensor<1x2x4x4xf32> -> tensor<1x2x4x4x!q.uniform<i8:f32, 0.00784313725490196:0>>
// TFLITE-NOT:  q.precision_change
// TFLITE:      {{//}} -----
// TFLITE:      %[[X:.*]] = q.dequantize %{{.*}} {onnx_name = "x"}
// TFLITE-NEXT: %[[C:.*]] = nn.constant dense<1.41421354> : tensor<f32> {onnx_name = "sqrt2"}
// TFLITE-NEXT: %d = nn.div %[[X]], %[[C]]
// TFLITE-NEXT: %e = nn.erf %d
// TFLITE-NEXT: %m = nn.mul %[[X]], %e
// TFLITE-NEXT: q.quantize %m

// CANNOT:      quantir-opt: error: hailo8: 1 op cannot be made legal (1 float-fallback) after 3 repairs; each line says why
// CANNOT-NEXT: quantir-opt: error: nn.softmax 'softmax' (ONNX layer softmax): precision_mode float; hailo8 runs no softmax in float (fallback: none) (hailo8.toml:{{[0-9]+}}); fix: quantize it: drop float=enabled for softmax [legalize could not: legalize never quantizes a layer the configuration leaves in float]

// REPORT: quantir-opt: warning: hailo8: 1 op cannot be made legal (1 float-fallback) after 3 repairs; each line says why
// REPORT: quantir-opt: warning: nn.softmax 'softmax' {{.*}} [legalize could not: legalize never quantizes a layer the configuration leaves in float]
