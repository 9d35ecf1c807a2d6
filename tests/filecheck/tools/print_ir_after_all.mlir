// RUN: quantir-opt %s -p fold-constants,dce --print-ir-after-all 2>&1 >/dev/null | filecheck %s

func.func @main(%x: tensor<2xf32>) -> tensor<2xf32> {
  %a = nn.constant dense<[1.000000e+00, 2.000000e+00]> : tensor<2xf32> {onnx_name = "a"}
  %b = nn.neg %a {onnx_name = "neg"} : (tensor<2xf32>) -> tensor<2xf32>
  %y = nn.add %x, %b {onnx_name = "add"} : (tensor<2xf32>, tensor<2xf32>) -> tensor<2xf32>
  func.return %y : tensor<2xf32>
}

// Every pass, the last one included, prints the IR after it ran.
// CHECK:      // -----// IR Dump After fold-constants //----- //
// CHECK:        %b = nn.constant dense<[-1.000000e+00, -2.000000e+00]> : tensor<2xf32> {onnx_name = "neg"}
// CHECK:      // -----// IR Dump After dce //----- //
// CHECK:        nn.add %x, %b
