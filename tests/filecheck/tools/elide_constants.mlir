// RUN: quantir-opt %s | filecheck %s --check-prefix=ELIDED
// RUN: quantir-opt %s --elide-limit 2 | filecheck %s --check-prefix=SMALL
// RUN: quantir-opt %s --print-large-constants | quantir-opt --print-large-constants | filecheck %s --check-prefix=WHOLE

func.func @main() -> (tensor<20xf32>, tensor<3xi64>, tensor<4x8xf32>) {
  %big = nn.constant dense<"0x0000803F000000400000404000008040000080BF000000C0000040C0000080C0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"> : tensor<20xf32> {onnx_name = "big"}
  %ids = nn.constant dense<[1, 2, 3]> : tensor<3xi64> {onnx_name = "ids"}
  %splat = nn.constant dense<"0x0000803F"> : tensor<4x8xf32> {onnx_name = "splat"}
  func.return %big, %ids, %splat : tensor<20xf32>, tensor<3xi64>, tensor<4x8xf32>
}

// ELIDED: nn.constant dense_resource<__elided__> : tensor<20xf32> {onnx_name = "big"}
// ELIDED: nn.constant dense<[1, 2, 3]> : tensor<3xi64> {onnx_name = "ids"}
// ELIDED: nn.constant dense_resource<__elided__> : tensor<4x8xf32> {onnx_name = "splat"}

// SMALL: nn.constant dense_resource<__elided__> : tensor<3xi64> {onnx_name = "ids"}

// WHOLE: nn.constant dense<"0x0000803F000000400000404000008040000080BF000000C0000040C0000080C0000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"> : tensor<20xf32> {onnx_name = "big"}
// WHOLE: nn.constant dense<"0x0000803F"> : tensor<4x8xf32> {onnx_name = "splat"}
