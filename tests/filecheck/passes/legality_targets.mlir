// Legality of one small calibrated module (conv + relu, pool, flatten, gemm, softmax)
// on every shipped target, quantized three ways: the default a8_w8, the conv in
// a16_w16 (inputs/conv_a16.alls) and the softmax left in float (softmax_float.alls).

// cpu-ref runs everything; sima-mla and horizon-j6 run this model at a8_w8 as it is.
// RUN: quantir-opt %s -p 'quantize,legality{target=cpu-ref}' -o %t.cpu.mlir 2>&1 | filecheck %s --allow-empty --check-prefix=QUIET
// RUN: filecheck %s --check-prefix=LEGAL < %t.cpu.mlir
// RUN: quantir-opt %s -p 'quantize,legality{target=sima-mla},legality{target=horizon-j6}' -o %t.vendor.mlir 2>&1 | filecheck %s --allow-empty --check-prefix=QUIET
// A float softmax: fine where the target runs it in float (horizon-j6: fp16, sima-mla: APU, qnn-htp: HTP fp16).
// RUN: quantir-opt %s -p 'quantize{script="%inputs/softmax_float.alls"},legality{target=horizon-j6},legality{target=sima-mla},legality{target=qnn-htp mode=report}' -o %t.fp16.mlir 2>&1 | filecheck %s --check-prefix=FP16

// hailo8: per-tensor weights only, unsigned activations (mode=error stops the pipeline).
// RUN: not quantir-opt %s -p 'quantize,legality{target=hailo8}' 2>&1 | filecheck %s --check-prefix=HAILO
// RUN: not quantir-opt %s -p 'quantize{script="%inputs/conv_a16.alls"},legality{target=hailo8}' 2>&1 | filecheck %s --check-prefix=HAILO16
// qnn-htp: unsigned activations.
// RUN: quantir-opt %s -p 'quantize,legality{target=qnn-htp mode=report}' 2>&1 >/dev/null | filecheck %s --check-prefix=QNN
// tflite-int8: FULLY_CONNECTED takes per-tensor weights; the JSON report on stderr.
// RUN: quantir-opt %s -p 'quantize,legality{target=tflite-int8 mode=report report=-}' 2>&1 >/dev/null | filecheck %s --check-prefix=TFLITE
// RUN: quantir-opt %s -p 'quantize{script="%inputs/conv_a16.alls"},legality{target=tflite-int8 mode=report}' 2>&1 >/dev/null | filecheck %s --check-prefix=TFLITE16
// horizon-j6 (J6M: no int16 on both activation and weight) and sima-mla (int8 weights).
// RUN: quantir-opt %s -p 'quantize{script="%inputs/conv_a16.alls"},legality{target=horizon-j6 mode=report}' 2>&1 >/dev/null | filecheck %s --check-prefix=J6
// RUN: quantir-opt %s -p 'quantize{script="%inputs/conv_a16.alls"},legality{target=sima-mla mode=report}' 2>&1 >/dev/null | filecheck %s --check-prefix=SIMA
// A float layer on a target without float fallback; bad options.
// RUN: not quantir-opt %s -p 'quantize{script="%inputs/softmax_float.alls"},legality{target=hailo8}' 2>&1 | filecheck %s --check-prefix=FLOAT
// RUN: not quantir-opt %s -p 'legality{target=hailo9}' 2>&1 | filecheck %s --check-prefix=UNKNOWN
// RUN: not quantir-opt %s -p 'legality{mode=fatal}' 2>&1 | filecheck %s --check-prefix=MODE

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

// QUIET-NOT: {{(warning|error)}}:
// LEGAL:     q.quantize %x
// LEGAL:     func.return

// FP16-NOT: {{horizon-j6|sima-mla|softmax}}
// FP16:     quantir-opt: warning: qnn-htp: 1 op cannot run as configured (1 activation-signedness)
// FP16-NOT: softmax

// HAILO:      quantir-opt: error: hailo8: 3 ops cannot run as configured (2 per-channel, 1 activation-signedness); fix the lines below or rerun with --legalize
// HAILO-NEXT: quantir-opt: error: nn.conv 'conv' (ONNX layers conv + relu): precision_mode a8_w8, bias_mode single_scale_decomposition (i32 bias), weights i8 per-channel, output i8; hailo8 takes per-tensor weights for conv (hailo8.toml:{{[0-9]+}}); fix: quantize its weights per tensor: quantization_param({conv}, weights=per_tensor), or --weights per-tensor for every layer; or run with --legalize (re-quantizes the weights per tensor)
// HAILO-NEXT: quantir-opt: error: nn.gemm 'fc' (ONNX layer fc): {{.*}} weights i8 per-channel, output i8; hailo8 takes per-tensor weights for gemm (hailo8.toml:{{[0-9]+}}); fix:
// HAILO-NEXT: quantir-opt: error: q.quantize '6 activation tensors' (tensors x, r, p, 3 more): storage 6 x i8; hailo8 stores activations unsigned (hailo8.toml:{{[0-9]+}}); fix: run with --legalize (re-expresses them as u8 / u16 with the zero point moved by 2^(bits-1): exact; no configuration line sets the signedness)

// The conv writes 16 bits, the pool reads 8: the precision change between them names
// both layers, the script line and how to fix it.
// HAILO16:      hailo8: 4 ops cannot run as configured (2 per-channel, 1 precision-change, 1 activation-signedness)
// HAILO16:      quantir-opt: error: q.precision_change 'r.to_8bit' (between conv and pool): precision_mode a16_w16_a8, conversion i16 -> i8, signed_output true; hailo8 converts u8 -> u16, not i16 -> i8 (hailo8.toml:{{[0-9]+}}); set by conv writes 16 bits ({{.*}}conv_a16.alls:1), pool reads 8 bits (default); fix: make conv write 8 bits: quantization_param({conv}, precision_mode=a16_w16_a8); or change {{.*}}conv_a16.alls:1 so both sides use one width; or run with --legalize (folds it into conv, which then writes i8 directly)

// QNN:      quantir-opt: warning: qnn-htp: 1 op cannot run as configured (1 activation-signedness)
// QNN-NEXT: quantir-opt: warning: q.quantize '6 activation tensors' {{.*}} qnn-htp stores activations unsigned (qnn-htp.toml:{{[0-9]+}})

// TFLITE:      "target": "tflite-int8",
// TFLITE:      "legal": false,
// TFLITE:      "summary": {
// TFLITE-NEXT:   "per-channel": 1
// TFLITE:      "kind": "per-channel",
// TFLITE-NEXT: "op": "nn.gemm",
// TFLITE-NEXT: "name": "fc",
// TFLITE:      "rule": "tflite-int8 takes per-tensor weights for gemm",
// TFLITE-NEXT: "rule_at": "tflite-int8.toml:{{[0-9]+}}",
// TFLITE:      "changes": []
// TFLITE:      quantir-opt: warning: tflite-int8: 1 op cannot run as configured (1 per-channel)

// TFLITE16: tflite-int8: 3 ops cannot run as configured (1 precision-mode, 1 per-channel, 1 precision-change)
// TFLITE16: nn.conv 'conv' (ONNX layers conv + relu): precision_mode a16_w16, {{.*}}; tflite-int8 runs conv in a8_w8 (tflite-int8.toml:{{[0-9]+}}); set by {{.*}}conv_a16.alls:1; fix: set precision_mode=a8_w8: quantization_param({conv}, precision_mode=a8_w8); or change {{.*}}conv_a16.alls:1 so it does not set a16_w16 on conv; or leave it in float on cpu: quantization_param({conv}, float=enabled); or run with --legalize (sets a8_w8)
// TFLITE16: q.precision_change 'r.to_8bit' (between conv and pool): {{.*}}; tflite-int8 converts no width to another, not i16 -> i8 (tflite-int8.toml)

// J6:      horizon-j6: 1 op cannot run as configured (1 precision-mode)
// J6-NEXT: nn.conv 'conv' (ONNX layers conv + relu): precision_mode a16_w16, {{.*}}; horizon-j6 runs conv in a8_w8, a16_w8, a8_w16, a8_w8_a16, a16_w8_a8, a8_w16_a16 (horizon-j6.toml:{{[0-9]+}}); set by {{.*}}conv_a16.alls:1; fix: set precision_mode=a16_w8: quantization_param({conv}, precision_mode=a16_w8)

// SIMA:      sima-mla: 1 op cannot run as configured (1 precision-mode)
// SIMA-NEXT: nn.conv 'conv' {{.*}}; sima-mla runs conv in a8_w8, a16_w8, a8_w8_a16 (sima-mla.toml:{{[0-9]+}}); {{.*}} fix: set precision_mode=a16_w8

// FLOAT: quantir-opt: error: nn.softmax 'softmax' (ONNX layer softmax): precision_mode float; hailo8 runs no softmax in float (fallback: none) (hailo8.toml:{{[0-9]+}}); fix: quantize it: drop float=enabled for softmax

// UNKNOWN: quantir-opt: error: unknown target 'hailo9'; known targets: cpu-ref, hailo8, horizon-j6, qnn-htp, sima-mla, tflite-int8 (or give a .toml file path)
// MODE: quantir-opt: error: legality: mode=fatal is not valid; use error (stop on an illegal module) or report (warn and go on)
