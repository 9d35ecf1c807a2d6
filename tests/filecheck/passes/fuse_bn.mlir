// RUN: quantir-opt %s -p fuse-bn | filecheck %s
// RUN: quantir-opt %s -p fuse-bn -o %t.mlir 2>&1 | filecheck %s --check-prefix=WARN

// Every batch norm here has k = scale / sqrt(var + eps) = [2, 0.5] and
// s = bias - mean * k = [0, -1.5]: y = x * k + s per channel.

// conv without bias: weight rows (axis 0) * k; a new bias s, named after the weight.
func.func @conv(%x: tensor<1x2x3x3xf32>) -> tensor<1x2x3x3xf32> {
  %w = nn.constant dense<[[[[1.0]], [[2.0]]], [[[3.0]], [[4.0]]]]> : tensor<2x2x1x1xf32> {onnx_name = "c.weight"}
  %y = nn.conv %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv"} : (tensor<1x2x3x3xf32>, tensor<2x2x1x1xf32>) -> tensor<1x2x3x3xf32>
  %scale = nn.constant dense<[2.0, 1.0]> : tensor<2xf32> {onnx_name = "bn.scale"}
  %bias = nn.constant dense<[1.0, -1.0]> : tensor<2xf32> {onnx_name = "bn.bias"}
  %mean = nn.constant dense<[0.5, 1.0]> : tensor<2xf32> {onnx_name = "bn.mean"}
  %var = nn.constant dense<[1.0, 4.0]> : tensor<2xf32> {onnx_name = "bn.var"}
  %z = nn.batch_norm %y, %scale, %bias, %mean, %var {epsilon = 0.0 : f32, onnx_name = "bn"} : (tensor<1x2x3x3xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<1x2x3x3xf32>
  %r = nn.relu %z {onnx_name = "relu"} : (tensor<1x2x3x3xf32>) -> tensor<1x2x3x3xf32>
  func.return %r : tensor<1x2x3x3xf32>
}

// CHECK-LABEL: func.func @conv(
// CHECK-NEXT:    %c.weight = nn.constant dense<{{\[\[\[\[}}2.000000e+00]], {{\[\[}}4.000000e+00]]], {{\[\[\[}}1.500000e+00]], {{\[\[}}2.000000e+00]]]]> : tensor<2x2x1x1xf32> {onnx_name = "c.weight"}
// CHECK-NEXT:    %c.bias = nn.constant dense<[0.000000e+00, -1.500000e+00]> : tensor<2xf32> {onnx_name = "c.bias"}
// The batch norm's beta and gamma stay on the fused op (cle and bias-correction read them).
// CHECK-NEXT:    %z = nn.conv %x, %c.weight, %c.bias {quantir.bn_stats = {beta = array<f64: 1.000000e+00, -1.000000e+00>, gamma = array<f64: 2.000000e+00, 1.000000e+00>}, {{.*}}onnx_name = "conv"}
// CHECK-NEXT:    %r = nn.relu %z {onnx_name = "relu"}
// CHECK-NEXT:    func.return %r

// conv with a bias (and groups): the bias becomes b * k + s, keeping its name.
func.func @conv_bias(%x: tensor<1x2x3x3xf32>) -> tensor<1x2x3x3xf32> {
  %w = nn.constant dense<[[[[1.0]]], [[[3.0]]]]> : tensor<2x1x1x1xf32> {onnx_name = "dw.weight"}
  %b = nn.constant dense<[1.0, 2.0]> : tensor<2xf32> {onnx_name = "dw.b"}
  %y = nn.conv %x, %w, %b {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 2 : i64, onnx_name = "dw"} : (tensor<1x2x3x3xf32>, tensor<2x1x1x1xf32>, tensor<2xf32>) -> tensor<1x2x3x3xf32>
  %scale = nn.constant dense<[2.0, 1.0]> : tensor<2xf32> {onnx_name = "bn.scale"}
  %bias = nn.constant dense<[1.0, -1.0]> : tensor<2xf32> {onnx_name = "bn.bias"}
  %mean = nn.constant dense<[0.5, 1.0]> : tensor<2xf32> {onnx_name = "bn.mean"}
  %var = nn.constant dense<[1.0, 4.0]> : tensor<2xf32> {onnx_name = "bn.var"}
  %z = nn.batch_norm %y, %scale, %bias, %mean, %var {epsilon = 0.0 : f32, onnx_name = "bn"} : (tensor<1x2x3x3xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<1x2x3x3xf32>
  func.return %z : tensor<1x2x3x3xf32>
}

// CHECK-LABEL: func.func @conv_bias(
// CHECK-NEXT:    %dw.weight = nn.constant dense<{{\[\[\[\[}}2.000000e+00]]], {{\[\[\[}}1.500000e+00]]]]> : tensor<2x1x1x1xf32> {onnx_name = "dw.weight"}
// CHECK-NEXT:    %dw.b = nn.constant dense<[2.000000e+00, -5.000000e-01]> : tensor<2xf32> {onnx_name = "dw.b"}
// CHECK-NEXT:    %z = nn.conv %x, %dw.weight, %dw.b {{{.*}}group = 2 : i64, onnx_name = "dw"}
// CHECK-NEXT:    func.return %z

// conv_transpose, 2 groups of 2 input channels, 1 output channel each: input channels
// 0 and 1 feed output channel 0 (* 2), channels 2 and 3 output channel 1 (* 0.5).
func.func @conv_transpose(%x: tensor<1x4x2x2xf32>) -> tensor<1x2x2x2xf32> {
  %w = nn.constant dense<[[[[1.0]]], [[[2.0]]], [[[3.0]]], [[[4.0]]]]> : tensor<4x1x1x1xf32> {onnx_name = "ct.weight"}
  %y = nn.conv_transpose %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, output_padding = array<i64: 0, 0>, group = 2 : i64, onnx_name = "ct"} : (tensor<1x4x2x2xf32>, tensor<4x1x1x1xf32>) -> tensor<1x2x2x2xf32>
  %scale = nn.constant dense<[2.0, 1.0]> : tensor<2xf32> {onnx_name = "bn.scale"}
  %bias = nn.constant dense<[1.0, -1.0]> : tensor<2xf32> {onnx_name = "bn.bias"}
  %mean = nn.constant dense<[0.5, 1.0]> : tensor<2xf32> {onnx_name = "bn.mean"}
  %var = nn.constant dense<[1.0, 4.0]> : tensor<2xf32> {onnx_name = "bn.var"}
  %z = nn.batch_norm %y, %scale, %bias, %mean, %var {epsilon = 0.0 : f32, onnx_name = "bn"} : (tensor<1x2x2x2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<1x2x2x2xf32>
  func.return %z : tensor<1x2x2x2xf32>
}

// CHECK-LABEL: func.func @conv_transpose(
// CHECK-NEXT:    %ct.weight = nn.constant dense<{{\[\[\[\[}}2.000000e+00]]], {{\[\[\[}}4.000000e+00]]], {{\[\[\[}}1.500000e+00]]], {{\[\[\[}}2.000000e+00]]]]> : tensor<4x1x1x1xf32> {onnx_name = "ct.weight"}
// CHECK-NEXT:    %ct.bias = nn.constant dense<[0.000000e+00, -1.500000e+00]> : tensor<2xf32> {onnx_name = "ct.bias"}
// CHECK-NEXT:    %z = nn.conv_transpose %x, %ct.weight, %ct.bias {{{.*}}onnx_name = "ct"}
// CHECK-NEXT:    func.return %z

// gemm with trans_b: B rows * k; C' = k * (beta * C) + s = [1, -1], beta 1.
func.func @gemm(%a: tensor<1x3xf32>) -> tensor<1x2xf32> {
  %b = nn.constant dense<[[1.0, 1.0, 1.0], [2.0, 2.0, 2.0]]> : tensor<2x3xf32> {onnx_name = "fc.weight"}
  %c = nn.constant dense<[1.0, 2.0]> : tensor<2xf32> {onnx_name = "fc.bias"}
  %y = nn.gemm %a, %b, %c {alpha = 1.0 : f32, beta = 0.5 : f32, trans_a = 0 : i64, trans_b = 1 : i64, onnx_name = "fc"} : (tensor<1x3xf32>, tensor<2x3xf32>, tensor<2xf32>) -> tensor<1x2xf32>
  %scale = nn.constant dense<[2.0, 1.0]> : tensor<2xf32> {onnx_name = "bn.scale"}
  %bias = nn.constant dense<[1.0, -1.0]> : tensor<2xf32> {onnx_name = "bn.bias"}
  %mean = nn.constant dense<[0.5, 1.0]> : tensor<2xf32> {onnx_name = "bn.mean"}
  %var = nn.constant dense<[1.0, 4.0]> : tensor<2xf32> {onnx_name = "bn.var"}
  %z = nn.batch_norm %y, %scale, %bias, %mean, %var {epsilon = 0.0 : f32, onnx_name = "bn"} : (tensor<1x2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<1x2xf32>
  func.return %z : tensor<1x2xf32>
}

// CHECK-LABEL: func.func @gemm(
// CHECK-NEXT:    %fc.weight = nn.constant dense<{{\[\[}}2.000000e+00, 2.000000e+00, 2.000000e+00], [1.000000e+00, 1.000000e+00, 1.000000e+00]]> : tensor<2x3xf32> {onnx_name = "fc.weight"}
// CHECK-NEXT:    %fc.bias = nn.constant dense<[1.000000e+00, -1.000000e+00]> : tensor<2xf32> {onnx_name = "fc.bias"}
// CHECK-NEXT:    %z = nn.gemm %a, %fc.weight, %fc.bias {quantir.bn_stats = {beta = array<f64: 1.000000e+00, -1.000000e+00>, gamma = array<f64: 2.000000e+00, 1.000000e+00>}, alpha = 1.000000e+00 : f32, beta = 1.000000e+00 : f32, trans_a = 0 : i64, trans_b = 1 : i64, onnx_name = "fc"}
// CHECK-NEXT:    func.return %z

// matmul with a constant (K, N) rhs: columns * k, then an add of s in the batch norm's place.
func.func @matmul(%a: tensor<1x3xf32>) -> tensor<1x2xf32> {
  %w = nn.constant dense<[[1.0, 2.0], [1.0, 2.0], [1.0, 2.0]]> : tensor<3x2xf32> {onnx_name = "m.weight"}
  %y = nn.matmul %a, %w {onnx_name = "mm"} : (tensor<1x3xf32>, tensor<3x2xf32>) -> tensor<1x2xf32>
  %scale = nn.constant dense<[2.0, 1.0]> : tensor<2xf32> {onnx_name = "bn.scale"}
  %bias = nn.constant dense<[1.0, -1.0]> : tensor<2xf32> {onnx_name = "bn.bias"}
  %mean = nn.constant dense<[0.5, 1.0]> : tensor<2xf32> {onnx_name = "bn.mean"}
  %var = nn.constant dense<[1.0, 4.0]> : tensor<2xf32> {onnx_name = "bn.var"}
  %z = nn.batch_norm %y, %scale, %bias, %mean, %var {epsilon = 0.0 : f32, onnx_name = "bn"} : (tensor<1x2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<1x2xf32>
  func.return %z : tensor<1x2xf32>
}

// CHECK-LABEL: func.func @matmul(
// CHECK-NEXT:    %m.weight = nn.constant dense<{{\[\[}}2.000000e+00, 1.000000e+00], [2.000000e+00, 1.000000e+00], [2.000000e+00, 1.000000e+00]]> : tensor<3x2xf32> {onnx_name = "m.weight"}
// CHECK-NEXT:    %y = nn.matmul %a, %m.weight {onnx_name = "mm"}
// CHECK-NEXT:    %m.bias = nn.constant dense<[0.000000e+00, -1.500000e+00]> : tensor<2xf32> {onnx_name = "m.bias"}
// CHECK-NEXT:    %z = nn.add %y, %m.bias {quantir.bn_stats = {beta = array<f64: 1.000000e+00, -1.000000e+00>, gamma = array<f64: 2.000000e+00, 1.000000e+00>}, onnx_name = "bn"}
// CHECK-NEXT:    func.return %z

// Left unfolded: the conv's output has a second user. The batch norm becomes a
// per-channel mul + add with (C, 1, 1) constants; the conv stays as it was.
func.func @two_users(%x: tensor<1x2x3x3xf32>) -> (tensor<1x2x3x3xf32>, tensor<1x2x3x3xf32>) {
  %w = nn.constant dense<[[[[1.0]], [[2.0]]], [[[3.0]], [[4.0]]]]> : tensor<2x2x1x1xf32> {onnx_name = "c.weight"}
  %y = nn.conv %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv2"} : (tensor<1x2x3x3xf32>, tensor<2x2x1x1xf32>) -> tensor<1x2x3x3xf32>
  %scale = nn.constant dense<[2.0, 1.0]> : tensor<2xf32> {onnx_name = "bn.scale"}
  %bias = nn.constant dense<[1.0, -1.0]> : tensor<2xf32> {onnx_name = "bn.bias"}
  %mean = nn.constant dense<[0.5, 1.0]> : tensor<2xf32> {onnx_name = "bn.mean"}
  %var = nn.constant dense<[1.0, 4.0]> : tensor<2xf32> {onnx_name = "bn.var"}
  %z = nn.batch_norm %y, %scale, %bias, %mean, %var {epsilon = 0.0 : f32, onnx_name = "bn2"} : (tensor<1x2x3x3xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<1x2x3x3xf32>
  func.return %y, %z : tensor<1x2x3x3xf32>, tensor<1x2x3x3xf32>
}

// CHECK-LABEL: func.func @two_users(
// CHECK-NEXT:    %w = nn.constant dense<{{\[\[\[\[}}1.000000e+00]], {{\[\[}}2.000000e+00]]], {{\[\[\[}}3.000000e+00]], {{\[\[}}4.000000e+00]]]]> : tensor<2x2x1x1xf32> {onnx_name = "c.weight"}
// CHECK-NEXT:    %y = nn.conv %x, %w {{{.*}}onnx_name = "conv2"} : (tensor<1x2x3x3xf32>, tensor<2x2x1x1xf32>) -> tensor<1x2x3x3xf32>
// CHECK-NEXT:    %bn2.scale = nn.constant dense<{{\[\[\[}}2.000000e+00]], {{\[\[}}5.000000e-01]]]> : tensor<2x1x1xf32> {onnx_name = "bn2.scale"}
// CHECK-NEXT:    %0 = nn.mul %y, %bn2.scale {onnx_name = "bn2.mul"}
// CHECK-NEXT:    %bn2.shift = nn.constant dense<{{\[\[\[}}0.000000e+00]], {{\[\[}}-1.500000e+00]]]> : tensor<2x1x1xf32> {onnx_name = "bn2.shift"}
// CHECK-NEXT:    %z = nn.add %0, %bn2.shift {onnx_name = "bn2"}
// CHECK-NEXT:    func.return %y, %z

// Left unfolded: the conv's weight is computed (a function argument).
func.func @computed_weight(%x: tensor<1x2x3x3xf32>, %w: tensor<2x2x1x1xf32>) -> tensor<1x2x3x3xf32> {
  %y = nn.conv %x, %w {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "conv3"} : (tensor<1x2x3x3xf32>, tensor<2x2x1x1xf32>) -> tensor<1x2x3x3xf32>
  %scale = nn.constant dense<[2.0, 1.0]> : tensor<2xf32> {onnx_name = "bn.scale"}
  %bias = nn.constant dense<[1.0, -1.0]> : tensor<2xf32> {onnx_name = "bn.bias"}
  %mean = nn.constant dense<[0.5, 1.0]> : tensor<2xf32> {onnx_name = "bn.mean"}
  %var = nn.constant dense<[1.0, 4.0]> : tensor<2xf32> {onnx_name = "bn.var"}
  %z = nn.batch_norm %y, %scale, %bias, %mean, %var {epsilon = 0.0 : f32, onnx_name = "bn3"} : (tensor<1x2x3x3xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<1x2x3x3xf32>
  func.return %z : tensor<1x2x3x3xf32>
}

// CHECK-LABEL: func.func @computed_weight(
// CHECK-NEXT:    %y = nn.conv %x, %w {{{.*}}onnx_name = "conv3"}
// CHECK-NEXT:    %bn3.scale = nn.constant
// CHECK-NEXT:    %0 = nn.mul %y, %bn3.scale {onnx_name = "bn3.mul"}
// CHECK-NEXT:    %bn3.shift = nn.constant
// CHECK-NEXT:    %z = nn.add %0, %bn3.shift {onnx_name = "bn3"}
// CHECK-NEXT:    func.return %z

// Left as it is: the statistics are computed.
func.func @computed_params(%x: tensor<1x2xf32>, %mean: tensor<2xf32>) -> tensor<1x2xf32> {
  %scale = nn.constant dense<[2.0, 1.0]> : tensor<2xf32> {onnx_name = "bn.scale"}
  %bias = nn.constant dense<[1.0, -1.0]> : tensor<2xf32> {onnx_name = "bn.bias"}
  %var = nn.constant dense<[1.0, 4.0]> : tensor<2xf32> {onnx_name = "bn.var"}
  %z = nn.batch_norm %x, %scale, %bias, %mean, %var {epsilon = 0.0 : f32, onnx_name = "bn4"} : (tensor<1x2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>, tensor<2xf32>) -> tensor<1x2xf32>
  func.return %z : tensor<1x2xf32>
}

// CHECK-LABEL: func.func @computed_params(
// CHECK:         %z = nn.batch_norm %x, %scale, %bias, %mean, %var {{{.*}}onnx_name = "bn4"}
// CHECK-NEXT:    func.return %z

// WARN-NOT:  fuse-bn: batch norm 'bn'
// WARN:      fuse-bn: batch norm 'bn2' not folded into nn.conv 'conv2': its output has 2 users; rewritten as a per-channel mul + add
// WARN:      fuse-bn: batch norm 'bn3' not folded into nn.conv 'conv3': its weight is not an nn.constant; rewritten as a per-channel mul + add
// WARN:      fuse-bn: batch norm 'bn4' left as it is: its scale, bias, mean and variance are not all nn.constants
