// RUN: quantir-opt %data/digits_cnn.onnx | filecheck %s

// The stem: conv, batch norm and ReLU keep their ONNX node names.
// CHECK:      func.func @main(%input: tensor<1x1x8x8xf32> {quantir.name = "input"}) -> (tensor<1x10xf32> {quantir.name = "logits"})
// CHECK:      nn.conv %input, %features.0.weight {strides = array<i64: 1, 1>, pads = array<i64: 1, 1, 1, 1>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "/features/features.0/Conv"}
// CHECK:      nn.batch_norm {{.*}} {epsilon = 1.000000e-05 : f32, onnx_name = "/features/features.1/BatchNormalization"}
// CHECK:      nn.relu
// Depthwise conv, then ReLU6 exported as Clip with constant bounds folded into properties.
// CHECK:      nn.conv {{.*}} group = 16 : i64
// CHECK:      nn.clip {{.*}} {min = 0.000000e+00 : f32, max = 6.000000e+00 : f32
// Stride-2 depthwise halves the feature map.
// CHECK:      nn.conv {{.*}} {strides = array<i64: 2, 2>, {{.*}} group = 32 : i64{{.*}} -> tensor<1x32x4x4xf32>
// The residual add, global pool, flatten (as a reshape) and the classifier.
// CHECK:      nn.add
// CHECK:      nn.global_average_pool {{.*}} -> tensor<1x32x1x1xf32>
// CHECK:      nn.reshape {{.*}} {shape = array<i64: 1, 32>
// CHECK:      nn.gemm {{.*}} {alpha = 1.000000e+00 : f32, beta = 1.000000e+00 : f32, trans_a = 0 : i64, trans_b = 1 : i64
// CHECK:      func.return
