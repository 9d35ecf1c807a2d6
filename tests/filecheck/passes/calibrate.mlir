// RUN: quantir-opt %data/digits_cnn.onnx -p 'calibrate{data="%data/digits_calib.npz"}' | filecheck %s
// RUN: quantir-opt %data/digits_cnn.onnx -p 'calibrate{data="%data/digits_calib.npz" method=percentile calibset_size=32}' | filecheck %s --check-prefix=PERCENTILE
// RUN: not quantir-opt %data/digits_cnn.onnx -p 'calibrate{data="%data/digits_calib.npz" method=best}' 2>&1 | filecheck %s --check-prefix=BAD

// The input's range and every op's output range land in the IR (min/max over 64 samples).
// CHECK: func.func @main(%input: tensor<1x1x8x8xf32> {quantir.name = "input", quantir.range = array<f64: 0.000000e+00, 1.000000e+00>})
// CHECK: nn.relu {{.*}} {quantir.ranges = [array<f64: 0.000000e+00, {{.*}}>]
// CHECK: nn.gemm {{.*}} {quantir.ranges = [array<f64: -{{.*}}, {{.*}}>]

// PERCENTILE: func.func @main(%input: tensor<1x1x8x8xf32> {quantir.name = "input", quantir.range = array<f64:

// BAD: quantir-opt: error: calibrate: unknown method 'best'; choose one of minmax, moving_average, mse, entropy, percentile
