// RUN: quantir-opt %data/tiny_vit.onnx --input-shape input=2,1,8,8 | filecheck %s

// CHECK:      func.func @main(%input: tensor<2x1x8x8xf32> {quantir.name = "input"}) -> (tensor<2x10xf32> {quantir.name = "logits"})
// CHECK:      nn.conv {{.*}} -> tensor<2x32x4x4xf32>
// Reshape targets with -1 resolve to static shapes.
// CHECK:      nn.reshape {{.*}} -> tensor<2x32x16xf32>
// CHECK:      nn.layer_norm {{.*}} {axis = 2 : i64, epsilon = {{.*}}} : (tensor<2x16x32xf32>, tensor<32xf32>, tensor<32xf32>) -> tensor<2x16x32xf32>
// CHECK:      nn.matmul {{.*}} : (tensor<2x2x16x16xf32>, tensor<2x2x16x16xf32>) -> tensor<2x2x16x16xf32>
// CHECK:      nn.softmax {{.*}} {axis = 3 : i64
// CHECK:      nn.erf
// CHECK:      nn.reduce_mean {{.*}} {axes = array<i64: 1>, keepdims = 0 : i64
// CHECK:      func.return
