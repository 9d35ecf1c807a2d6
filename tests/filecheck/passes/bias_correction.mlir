// RUN: quantir-opt %s -p 'bias-correction{mode=analytic reference="%inputs/bias_correction_float.mlir"}' 2>/dev/null | filecheck %s --check-prefix=ANALYTIC
// RUN: quantir-opt %s -p 'bias-correction{mode=analytic reference="%inputs/bias_correction_float.mlir"}' 2>&1 >/dev/null | filecheck %s --check-prefix=REPORT
// RUN: quantir-opt %s -p 'bias-correction{reference="%inputs/bias_correction_float.mlir" data="%data/digits_sample.npy"}' 2>/dev/null | filecheck %s --check-prefix=EMPIRICAL
// RUN: not quantir-opt %s -p 'bias-correction{data="%data/digits_sample.npy"}' 2>&1 | filecheck %s --check-prefix=NOREF
// RUN: not quantir-opt %s -p 'bias-correction{reference="%inputs/bias_correction_float.mlir"}' 2>&1 | filecheck %s --check-prefix=NODATA
// RUN: not quantir-opt %inputs/bias_correction_float.mlir -p 'bias-correction{mode=analytic reference="%inputs/bias_correction_float.mlir"}' 2>&1 | filecheck %s --check-prefix=FLOAT

// A quantized module (as quantize writes it). conv0 runs in float (a float fallback);
// its batch norm left its statistics: channel 0 about N(1, 0), channel 1 about N(0, 1).
// conv1 is quantized: weights at 0.01 per step, an int32 bias at s_x * s_w = 0.02 * 0.01.
// conv2 is quantized but has no bias.
func.func @main(%x: tensor<1x1x8x8xf32> {quantir.name = "input"}) -> (tensor<1x2x8x8xf32> {quantir.name = "y"}) {
  %xq = q.quantize %x {onnx_name = "input"} : tensor<1x1x8x8xf32> -> tensor<1x1x8x8x!q.uniform<i8:f32, 0.00392156862745098:-128>>
  %xd = q.dequantize %xq {onnx_name = "input"} : tensor<1x1x8x8x!q.uniform<i8:f32, 0.00392156862745098:-128>> -> tensor<1x1x8x8xf32>
  %w0 = nn.constant dense<[[[[1.0]]], [[[-1.0]]]]> : tensor<2x1x1x1xf32> {onnx_name = "w0"}
  %b0 = nn.constant dense<[1.0, 0.0]> : tensor<2xf32> {onnx_name = "b0"}
  %h = nn.conv %xd, %w0, %b0 {quantir.bn_stats = {beta = array<f64: 1.0, 0.0>, gamma = array<f64: 0.0, 1.0>}, strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv0", activation = "relu"} : (tensor<1x1x8x8xf32>, tensor<2x1x1x1xf32>, tensor<2xf32>) -> tensor<1x2x8x8xf32>
  %hq = q.quantize %h {onnx_name = "h"} : tensor<1x2x8x8xf32> -> tensor<1x2x8x8x!q.uniform<i8:f32, 0.02:-128>>
  %hd = q.dequantize %hq {onnx_name = "h"} : tensor<1x2x8x8x!q.uniform<i8:f32, 0.02:-128>> -> tensor<1x2x8x8xf32>
  %w1q = q.constant dense<[[[[50]], [[26]]], [[[100]], [[-50]]]]> : tensor<2x2x1x1xi8> {onnx_name = "w1"} : tensor<2x2x1x1x!q.uniform<i8:f32, 0.01:0>>
  %w1 = q.dequantize %w1q {onnx_name = "w1"} : tensor<2x2x1x1x!q.uniform<i8:f32, 0.01:0>> -> tensor<2x2x1x1xf32>
  %b1q = q.constant dense<[500, -1000]> : tensor<2xi32> {onnx_name = "b1"} : tensor<2x!q.uniform<i32:f32, 0.0002:0>>
  %b1 = q.dequantize %b1q {onnx_name = "b1"} : tensor<2x!q.uniform<i32:f32, 0.0002:0>> -> tensor<2xf32>
  %y1 = nn.conv %hd, %w1, %b1 {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv1"} : (tensor<1x2x8x8xf32>, tensor<2x2x1x1xf32>, tensor<2xf32>) -> tensor<1x2x8x8xf32>
  %y1q = q.quantize %y1 {onnx_name = "y1"} : tensor<1x2x8x8xf32> -> tensor<1x2x8x8x!q.uniform<i8:f32, 0.01:0>>
  %y1d = q.dequantize %y1q {onnx_name = "y1"} : tensor<1x2x8x8x!q.uniform<i8:f32, 0.01:0>> -> tensor<1x2x8x8xf32>
  %w2q = q.constant dense<[[[[64]], [[0]]], [[[0]], [[64]]]]> : tensor<2x2x1x1xi8> {onnx_name = "w2"} : tensor<2x2x1x1x!q.uniform<i8:f32, 0.015625:0>>
  %w2 = q.dequantize %w2q {onnx_name = "w2"} : tensor<2x2x1x1x!q.uniform<i8:f32, 0.015625:0>> -> tensor<2x2x1x1xf32>
  %y = nn.conv %y1d, %w2 {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv2"} : (tensor<1x2x8x8xf32>, tensor<2x2x1x1xf32>) -> tensor<1x2x8x8xf32>
  %yq = q.quantize %y {onnx_name = "y"} : tensor<1x2x8x8xf32> -> tensor<1x2x8x8x!q.uniform<i8:f32, 0.01:0>>
  %yd = q.dequantize %yq {onnx_name = "y"} : tensor<1x2x8x8x!q.uniform<i8:f32, 0.01:0>> -> tensor<1x2x8x8xf32>
  func.return %yd : tensor<1x2x8x8xf32>
}

// Analytic: E[x] of conv1's input is ReLU of conv0's normals: channel 0 max(1, 0) = 1,
// channel 1 the clipped-normal mean 1 / sqrt(2 pi) = 0.398942. The weight error
// e = W_q - W is (-0.004, 0; 0, -0.003), so the output means sit e E[x] = (-0.004,
// -0.0011968) off: the bias gains (0.004, 0.0011968) = (20, 5.98) steps of 0.0002,
// (500, -1000) -> (520, -994). Its type stays int32 at its scale. The float layer keeps
// its float bias; conv2 has none and gets none.
// ANALYTIC:      %b0 = nn.constant dense<[1.000000e+00, 0.000000e+00]> : tensor<2xf32> {onnx_name = "b0"}
// ANALYTIC:      %w1q = q.constant dense<{{\[\[\[\[}}50]], {{\[\[}}26]]], {{\[\[\[}}100]], {{\[\[}}-50]]]]> : tensor<2x2x1x1xi8>
// ANALYTIC:      %b1q = q.constant dense<[520, -994]> : tensor<2xi32> {onnx_name = "b1"} : tensor<2x!q.uniform<i32:f32, 0.0002:0>>
// ANALYTIC-NEXT: %b1 = q.dequantize %b1q
// ANALYTIC-NEXT: %y1 = nn.conv %hd, %w1, %b1
// ANALYTIC:      %y = nn.conv %y1d, %w2 {{{.*}}onnx_name = "conv2"} : (tensor<1x2x8x8xf32>, tensor<2x2x1x1xf32>) -> tensor<1x2x8x8xf32>

// REPORT: bias-correction: left 'conv0' alone: it runs in float (its weights are not quantized)
// REPORT: bias-correction: left 'conv2' alone: no bias to correct (bias-correction creates none; give the layer a zero bias in the model to correct it)
// REPORT: bias-correction: corrected 'conv1': largest |correction| 0.4 output LSB (0.004)

// Empirical, over the 4 digits of digits_sample.npy: the float module's mean output per
// channel minus the quantized one's, rounded to the bias grid.
// EMPIRICAL: %b1q = q.constant dense<[526, -1001]> : tensor<2xi32> {onnx_name = "b1"} : tensor<2x!q.uniform<i32:f32, 0.0002:0>>

// NOREF: quantir-opt: error: bias-correction{mode=empirical}: no float reference: the quantized module keeps only the quantized weights; give bias-correction{reference=FILE}
// NODATA: quantir-opt: error: bias-correction{mode=empirical}: no calibration data; give bias-correction{data=FILE} or quantir.compile(..., calibration=...), or use mode=analytic (data-free)
// FLOAT: quantir-opt: error: bias-correction{mode=analytic}: the module is not quantized (no q.constant weights); run it after quantize
