// RUN: quantir-opt %s -p 'matmul-decompose{max-k=2 max-n=2}' | filecheck %s --check-prefix=TILE
// RUN: quantir-opt %s -p 'matmul-decompose{to-conv=true}' | filecheck %s --check-prefix=CONV
// RUN: quantir-opt %s -p 'matmul-decompose{max-k=3 to-conv=true}' | filecheck %s --check-prefix=CONVTILE
// RUN: quantir-opt %s -p matmul-decompose | filecheck %s --check-prefix=INT
// RUN: quantir-opt %s -p 'matmul-decompose{split-16bit=false}' | filecheck %s --check-prefix=NOSPLIT
// RUN: quantir-opt %s -p 'matmul-decompose{max-k=2 to-conv=true rounding=single}' -o %t.mlir 2>&1 | filecheck %s --check-prefix=WARN

// ---- Float graph --------------------------------------------------------------------

// K = 4, N = 2 with a constant weight.
func.func @matmul(%x: tensor<1x3x4xf32>) -> tensor<1x3x2xf32> {
  %w = nn.constant dense<[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]> : tensor<4x2xf32> {onnx_name = "fc.weight"}
  %y = nn.matmul %x, %w {onnx_name = "fc"} : (tensor<1x3x4xf32>, tensor<4x2xf32>) -> tensor<1x3x2xf32>
  func.return %y : tensor<1x3x2xf32>
}

// max-k=2: two K tiles (activation slices, weight row blocks), summed by an nn.add.
// TILE-LABEL: func.func @matmul(
// TILE-NEXT:    %y_slice_k0 = nn.slice %x {starts = array<i64: 0, 0, 0>, ends = array<i64: 1, 3, 2>, steps = array<i64: 1, 1, 1>, onnx_name = "fc/slice_k0"} : (tensor<1x3x4xf32>) -> tensor<1x3x2xf32>
// TILE-NEXT:    %y_slice_k1 = nn.slice %x {starts = array<i64: 0, 0, 2>, ends = array<i64: 1, 3, 4>, steps = array<i64: 1, 1, 1>, onnx_name = "fc/slice_k1"} : (tensor<1x3x4xf32>) -> tensor<1x3x2xf32>
// TILE-NEXT:    %fc.weight_k0 = nn.constant dense<{{\[\[}}1.000000e+00, 2.000000e+00], [3.000000e+00, 4.000000e+00]]> : tensor<2x2xf32> {onnx_name = "fc.weight/k0"}
// TILE-NEXT:    %y_k0 = nn.matmul %y_slice_k0, %fc.weight_k0 {onnx_name = "fc/k0"} : (tensor<1x3x2xf32>, tensor<2x2xf32>) -> tensor<1x3x2xf32>
// TILE-NEXT:    %fc.weight_k1 = nn.constant dense<{{\[\[}}5.000000e+00, 6.000000e+00], [7.000000e+00, 8.000000e+00]]> : tensor<2x2xf32> {onnx_name = "fc.weight/k1"}
// TILE-NEXT:    %y_k1 = nn.matmul %y_slice_k1, %fc.weight_k1 {onnx_name = "fc/k1"} : (tensor<1x3x2xf32>, tensor<2x2xf32>) -> tensor<1x3x2xf32>
// TILE-NEXT:    %y = nn.add %y_k0, %y_k1 {onnx_name = "fc/add_k1"} : (tensor<1x3x2xf32>, tensor<1x3x2xf32>) -> tensor<1x3x2xf32>
// TILE-NEXT:    func.return %y : tensor<1x3x2xf32>

// to-conv: (1, 3, 4) -> transpose (1, 4, 3) -> reshape (1, 4, 1, 3); weight (2, 4, 1, 1),
// keeping the weight's name (the old constant died); back to (1, 3, 2).
// CONV-LABEL: func.func @matmul(
// CONV-NEXT:    %y_to_nchw_transpose = nn.transpose %x {perm = array<i64: 0, 2, 1>, onnx_name = "fc/to_nchw_transpose"} : (tensor<1x3x4xf32>) -> tensor<1x4x3xf32>
// CONV-NEXT:    %y_to_nchw = nn.reshape %y_to_nchw_transpose {shape = array<i64: 1, 4, 1, 3>, onnx_name = "fc/to_nchw"} : (tensor<1x4x3xf32>) -> tensor<1x4x1x3xf32>
// CONV-NEXT:    %fc.weight = nn.constant dense<{{\[\[\[\[}}1.000000e+00]], {{\[\[}}3.000000e+00]], {{\[\[}}5.000000e+00]], {{\[\[}}7.000000e+00]]], {{\[\[\[}}2.000000e+00]], {{\[\[}}4.000000e+00]], {{\[\[}}6.000000e+00]], {{\[\[}}8.000000e+00]]]]> : tensor<2x4x1x1xf32> {onnx_name = "fc.weight"}
// CONV-NEXT:    %y_conv = nn.conv %y_to_nchw, %fc.weight {strides = array<i64: 1, 1>, pads = array<i64: 0, 0, 0, 0>, dilations = array<i64: 1, 1>, group = 1 : i64, onnx_name = "fc"} : (tensor<1x4x1x3xf32>, tensor<2x4x1x1xf32>) -> tensor<1x2x1x3xf32>
// CONV-NEXT:    %y_from_nchw = nn.reshape %y_conv {shape = array<i64: 1, 2, 3>, onnx_name = "fc/from_nchw"} : (tensor<1x2x1x3xf32>) -> tensor<1x2x3xf32>
// CONV-NEXT:    %y = nn.transpose %y_from_nchw {perm = array<i64: 0, 2, 1>, onnx_name = "fc/from_nchw_transpose"} : (tensor<1x2x3xf32>) -> tensor<1x3x2xf32>
// CONV-NEXT:    func.return %y : tensor<1x3x2xf32>

// to-conv with max-k=3: the activation enters conv layout once, its channel axis is sliced.
// CONVTILE-LABEL: func.func @matmul(
// CONVTILE-NEXT:    %y_to_nchw_transpose = nn.transpose %x
// CONVTILE-NEXT:    %y_to_nchw = nn.reshape %y_to_nchw_transpose
// CONVTILE-NEXT:    %y_slice_k0 = nn.slice %y_to_nchw {starts = array<i64: 0, 0, 0, 0>, ends = array<i64: 1, 3, 1, 3>, {{.*}}onnx_name = "fc/slice_k0"}
// CONVTILE-NEXT:    %y_slice_k1 = nn.slice %y_to_nchw {starts = array<i64: 0, 3, 0, 0>, ends = array<i64: 1, 4, 1, 3>, {{.*}}onnx_name = "fc/slice_k1"}
// CONVTILE-NEXT:    %fc.weight_k0 = nn.constant {{.*}} : tensor<2x3x1x1xf32> {onnx_name = "fc.weight/k0"}
// CONVTILE-NEXT:    %y_k0 = nn.conv %y_slice_k0, %fc.weight_k0 {{{.*}}onnx_name = "fc/k0"} : (tensor<1x3x1x3xf32>, tensor<2x3x1x1xf32>) -> tensor<1x2x1x3xf32>
// CONVTILE-NEXT:    %fc.weight_k1 = nn.constant dense<{{\[\[\[\[}}7.000000e+00]]], {{\[\[\[}}8.000000e+00]]]]> : tensor<2x1x1x1xf32> {onnx_name = "fc.weight/k1"}
// CONVTILE-NEXT:    %y_k1 = nn.conv %y_slice_k1, %fc.weight_k1 {{{.*}}onnx_name = "fc/k1"} : (tensor<1x1x1x3xf32>, tensor<2x1x1x1xf32>) -> tensor<1x2x1x3xf32>
// CONVTILE-NEXT:    %y_add_k1 = nn.add %y_k0, %y_k1 {onnx_name = "fc/add_k1"}
// CONVTILE-NEXT:    %y_from_nchw = nn.reshape %y_add_k1
// CONVTILE-NEXT:    %y = nn.transpose %y_from_nchw
// CONVTILE-NEXT:    func.return %y

// Under every limit and without to-conv, a product is left alone.
// INT-LABEL: func.func @matmul(
// INT-NEXT:    %w = nn.constant
// INT-NEXT:    %y = nn.matmul %x, %w {onnx_name = "fc"}
// INT-NEXT:    func.return %y

// gemm with trans_a, trans_b, beta = 2, a C vector and a fused ReLU; K = 4, N = 3.
func.func @gemm(%a: tensor<4x2xf32>) -> tensor<2x3xf32> {
  %b = nn.constant dense<[[1.0, 2.0, 3.0, 4.0], [5.0, 6.0, 7.0, 8.0], [9.0, 10.0, 11.0, 12.0]]> : tensor<3x4xf32> {onnx_name = "head.weight"}
  %c = nn.constant dense<[0.5, -0.5, 1.0]> : tensor<3xf32> {onnx_name = "head.bias"}
  %y = nn.gemm %a, %b, %c {alpha = 1.0 : f32, beta = 2.0 : f32, trans_a = 1 : i64, trans_b = 1 : i64, activation = "relu", onnx_name = "head"} : (tensor<4x2xf32>, tensor<3x4xf32>, tensor<3xf32>) -> tensor<2x3xf32>
  func.return %y : tensor<2x3xf32>
}

// Tiles of B^T (K x N), the N tiles joined on the last axis, beta * C added once with
// the ReLU.
// TILE-LABEL: func.func @gemm(
// TILE-NEXT:    %y_transpose_a = nn.transpose %a {perm = array<i64: 1, 0>, onnx_name = "head/transpose_a"} : (tensor<4x2xf32>) -> tensor<2x4xf32>
// TILE-NEXT:    %y_slice_k0 = nn.slice %y_transpose_a
// TILE-NEXT:    %y_slice_k1 = nn.slice %y_transpose_a
// TILE-NEXT:    %head.weight_n0_k0 = nn.constant dense<{{\[\[}}1.000000e+00, 5.000000e+00], [2.000000e+00, 6.000000e+00]]> : tensor<2x2xf32> {onnx_name = "head.weight/n0_k0"}
// TILE-NEXT:    %y_n0_k0 = nn.matmul %y_slice_k0, %head.weight_n0_k0 {onnx_name = "head/n0_k0"}
// TILE-NEXT:    %head.weight_n0_k1 = nn.constant dense<{{\[\[}}3.000000e+00, 7.000000e+00], [4.000000e+00, 8.000000e+00]]> : tensor<2x2xf32> {onnx_name = "head.weight/n0_k1"}
// TILE-NEXT:    %y_n0_k1 = nn.matmul %y_slice_k1, %head.weight_n0_k1 {onnx_name = "head/n0_k1"}
// TILE-NEXT:    %y_add_n0_k1 = nn.add %y_n0_k0, %y_n0_k1 {onnx_name = "head/add_n0_k1"}
// TILE-NEXT:    %head.weight_n1_k0 = nn.constant dense<{{\[\[}}9.000000e+00], [1.000000e+01]]> : tensor<2x1xf32> {onnx_name = "head.weight/n1_k0"}
// TILE-NEXT:    %y_n1_k0 = nn.matmul %y_slice_k0, %head.weight_n1_k0 {onnx_name = "head/n1_k0"}
// TILE-NEXT:    %head.weight_n1_k1 = nn.constant dense<{{\[\[}}1.100000e+01], [1.200000e+01]]> : tensor<2x1xf32> {onnx_name = "head.weight/n1_k1"}
// TILE-NEXT:    %y_n1_k1 = nn.matmul %y_slice_k1, %head.weight_n1_k1 {onnx_name = "head/n1_k1"}
// TILE-NEXT:    %y_add_n1_k1 = nn.add %y_n1_k0, %y_n1_k1 {onnx_name = "head/add_n1_k1"}
// TILE-NEXT:    %y_concat = nn.concat %y_add_n0_k1, %y_add_n1_k1 {axis = 1 : i64, onnx_name = "head/concat"} : (tensor<2x2xf32>, tensor<2x1xf32>) -> tensor<2x3xf32>
// TILE-NEXT:    %head.bias = nn.constant dense<[1.000000e+00, -1.000000e+00, 2.000000e+00]> : tensor<3xf32> {onnx_name = "head.bias"}
// TILE-NEXT:    %y = nn.add %y_concat, %head.bias {activation = "relu", onnx_name = "head/bias"} : (tensor<2x3xf32>, tensor<3xf32>) -> tensor<2x3xf32>
// TILE-NEXT:    func.return %y : tensor<2x3xf32>

// to-conv: A^T is already (K, M): a reshape, no transpose; C becomes the conv bias and
// the ReLU stays on the conv.
// CONV-LABEL: func.func @gemm(
// CONV-NEXT:    %y_to_nchw = nn.reshape %a {shape = array<i64: 1, 4, 1, 2>, onnx_name = "head/to_nchw"} : (tensor<4x2xf32>) -> tensor<1x4x1x2xf32>
// CONV-NEXT:    %head.weight = nn.constant dense<"0x0000803F0000004000004040000080400000A0400000C0400000E0400000004100001041000020410000304100004041"> : tensor<3x4x1x1xf32> {onnx_name = "head.weight"}
// CONV-NEXT:    %head.bias = nn.constant dense<[1.000000e+00, -1.000000e+00, 2.000000e+00]> : tensor<3xf32> {onnx_name = "head.bias"}
// CONV-NEXT:    %y_conv = nn.conv %y_to_nchw, %head.weight, %head.bias {{{.*}}activation = "relu", onnx_name = "head"} : (tensor<1x4x1x2xf32>, tensor<3x4x1x1xf32>, tensor<3xf32>) -> tensor<1x3x1x2xf32>
// CONV-NEXT:    %y_from_nchw = nn.reshape %y_conv {shape = array<i64: 3, 2>, onnx_name = "head/from_nchw"} : (tensor<1x3x1x2xf32>) -> tensor<3x2xf32>
// CONV-NEXT:    %y = nn.transpose %y_from_nchw {perm = array<i64: 1, 0>, onnx_name = "head/from_nchw_transpose"} : (tensor<3x2xf32>) -> tensor<2x3xf32>
// CONV-NEXT:    func.return %y : tensor<2x3xf32>

// One row (M = 1): reshapes only; a C that differs per row stays an nn.add after.
func.func @row(%x: tensor<1x4xf32>, %c: tensor<1x2xf32>) -> tensor<1x2xf32> {
  %w = nn.constant dense<[[1.0, 2.0], [3.0, 4.0], [5.0, 6.0], [7.0, 8.0]]> : tensor<4x2xf32> {onnx_name = "w"}
  %y = nn.gemm %x, %w, %c {alpha = 1.0 : f32, beta = 1.0 : f32, trans_a = 0 : i64, trans_b = 0 : i64, onnx_name = "row"} : (tensor<1x4xf32>, tensor<4x2xf32>, tensor<1x2xf32>) -> tensor<1x2xf32>
  func.return %y : tensor<1x2xf32>
}

// CONV-LABEL: func.func @row(
// CONV-NEXT:    %y_to_nchw = nn.reshape %x {shape = array<i64: 1, 4, 1, 1>, onnx_name = "row/to_nchw"}
// CONV-NEXT:    %w = nn.constant {{.*}} : tensor<2x4x1x1xf32> {onnx_name = "w"}
// CONV-NEXT:    %y_conv = nn.conv %y_to_nchw, %w {{{.*}}onnx_name = "row"}
// CONV-NEXT:    %y_from_nchw = nn.reshape %y_conv {shape = array<i64: 1, 2>, onnx_name = "row/from_nchw"}
// CONV-NEXT:    %y = nn.add %y_from_nchw, %c {onnx_name = "row/bias"} : (tensor<1x2xf32>, tensor<1x2xf32>) -> tensor<1x2xf32>
// CONV-NEXT:    func.return %y

// Activation x activation: never a conv, never tiled (reported).
func.func @attention(%q: tensor<1x2x3x4xf32>, %k: tensor<1x2x4x3xf32>) -> tensor<1x2x3x3xf32> {
  %s = nn.matmul %q, %k {onnx_name = "scores"} : (tensor<1x2x3x4xf32>, tensor<1x2x4x3xf32>) -> tensor<1x2x3x3xf32>
  func.return %s : tensor<1x2x3x3xf32>
}

// CONV-LABEL: func.func @attention(
// CONV-NEXT:    %s = nn.matmul %q, %k {onnx_name = "scores"}
// CONV-NEXT:    func.return %s

// A batched constant rhs is tiled but stays a matmul.
func.func @batched(%x: tensor<2x3x4xf32>) -> tensor<2x3x1xf32> {
  %w = nn.constant dense<1.0> : tensor<2x4x1xf32> {onnx_name = "bw"}
  %y = nn.matmul %x, %w {onnx_name = "batched"} : (tensor<2x3x4xf32>, tensor<2x4x1xf32>) -> tensor<2x3x1xf32>
  func.return %y : tensor<2x3x1xf32>
}

// TILE-LABEL: func.func @batched(
// TILE:         %bw_k0 = nn.constant dense<1.000000e+00> : tensor<2x2x1xf32> {onnx_name = "bw/k0"}
// TILE:         %y = nn.add %y_k0, %y_k1 {onnx_name = "batched/add_k1"}

// CONV-LABEL: func.func @batched(
// CONV-NEXT:    %w = nn.constant
// CONV-NEXT:    %y = nn.matmul %x, %w {onnx_name = "batched"}

// A dynamic shape: left alone, reported.
func.func @dynamic(%x: tensor<?x4xf32>) -> tensor<?x2xf32> {
  %w = nn.constant dense<1.0> : tensor<4x2xf32> {onnx_name = "dw"}
  %y = nn.matmul %x, %w {onnx_name = "dynamic"} : (tensor<?x4xf32>, tensor<4x2xf32>) -> tensor<?x2xf32>
  func.return %y : tensor<?x2xf32>
}

// TILE-LABEL: func.func @dynamic(
// TILE-NEXT:    %w = nn.constant
// TILE-NEXT:    %y = nn.matmul %x, %w {onnx_name = "dynamic"}

// ---- Integer program ----------------------------------------------------------------

// 16 x 16 bits: a computed lhs (zero point -300 = -2 * 256 + 212) and a constant rhs
// (zero point 1000 = 3 * 256 + 232) with a bias.
func.func @int16(%a: tensor<2x3x!q.uniform<i16:f32, 0.01:-300>>) -> tensor<2x2x!q.uniform<i32:f32, 0.0002:0>> {
  %w = q.constant dense<[[1000, -1], [256, 0], [-32768, 32767]]> : tensor<3x2xi16> {onnx_name = "fc.weight"} : tensor<3x2x!q.uniform<i16:f32, 0.02:1000>>
  %bias = q.constant dense<[5, -5]> : tensor<2xi32> {onnx_name = "fc.bias"} : tensor<2x!q.uniform<i32:f32, 0.0002:0>>
  %y = qi.matmul %a, %w, %bias {onnx_name = "fc"} : (tensor<2x3x!q.uniform<i16:f32, 0.01:-300>>, tensor<3x2x!q.uniform<i16:f32, 0.02:1000>>, tensor<2x!q.uniform<i32:f32, 0.0002:0>>) -> tensor<2x2x!q.uniform<i32:f32, 0.0002:0>>
  func.return %y : tensor<2x2x!q.uniform<i32:f32, 0.0002:0>>
}

// INT-LABEL: func.func @int16(
// INT-NEXT:    %bias = q.constant
// INT-NEXT:    %a_hi = qi.lookup %a {onnx_name = "fc/lhs_hi", table = dense_resource<__elided__> : tensor<65536xi8>} : (tensor<2x3x!q.uniform<i16:f32, 0.01:-300>>) -> tensor<2x3x!q.uniform<i8:f32, 2.56:-2>>
// INT-NEXT:    %a_lo = qi.lookup %a {onnx_name = "fc/lhs_lo", table = dense_resource<__elided__> : tensor<65536xui8>} : (tensor<2x3x!q.uniform<i16:f32, 0.01:-300>>) -> tensor<2x3x!q.uniform<u8:f32, 0.01:212>>
// INT-NEXT:    %w_hi = q.constant dense<{{\[\[}}3, -1], [1, 0], [-128, 127]]> : tensor<3x2xi8> {onnx_name = "fc.weight/hi"} : tensor<3x2x!q.uniform<i8:f32, 5.12:3>>
// INT-NEXT:    %w_lo = q.constant dense<{{\[\[}}232, 255], [0, 0], [0, 255]]> : tensor<3x2xui8> {onnx_name = "fc.weight/lo"} : tensor<3x2x!q.uniform<u8:f32, 0.02:232>>
// INT-NEXT:    %y_hi_hi = qi.matmul %a_hi, %w_hi {onnx_name = "fc/hi_hi"} : ({{.*}}) -> tensor<2x2x!q.uniform<i32:f32, 13.1072:0>>
// INT-NEXT:    %y_hi_lo = qi.matmul %a_hi, %w_lo {onnx_name = "fc/hi_lo"} : ({{.*}}) -> tensor<2x2x!q.uniform<i32:f32, 0.0512:0>>
// INT-NEXT:    %y_lo_hi = qi.matmul %a_lo, %w_hi {onnx_name = "fc/lo_hi"} : ({{.*}}) -> tensor<2x2x!q.uniform<i32:f32, 0.0512:0>>
// INT-NEXT:    %y_lo_lo = qi.matmul %a_lo, %w_lo, %bias {onnx_name = "fc/lo_lo"} : ({{.*}}) -> tensor<2x2x!q.uniform<i32:f32, 0.0002:0>>
// INT-NEXT:    %y_sum8 = qi.add %y_hi_lo, %y_lo_hi {onnx_name = "fc/sum8"}
// INT-NEXT:    %y_rescale16 = q.requant %y_hi_hi {onnx_name = "fc/rescale16", multiplier = 1073741824 : i32, shift = 9 : i64, rounding = "tflite"} : tensor<2x2x!q.uniform<i32:f32, 13.1072:0>> -> tensor<2x2x!q.uniform<i32:f32, 0.0512:0>>
// INT-NEXT:    %y_add8 = qi.add %y_rescale16, %y_sum8 {onnx_name = "fc/add8"}
// INT-NEXT:    %y_rescale8 = q.requant %y_add8 {onnx_name = "fc/rescale8", multiplier = 1073741824 : i32, shift = 9 : i64, rounding = "tflite"} : tensor<2x2x!q.uniform<i32:f32, 0.0512:0>> -> tensor<2x2x!q.uniform<i32:f32, 0.0002:0>>
// INT-NEXT:    %y = qi.add %y_rescale8, %y_lo_lo {onnx_name = "fc/add0"} : (tensor<2x2x!q.uniform<i32:f32, 0.0002:0>>, tensor<2x2x!q.uniform<i32:f32, 0.0002:0>>) -> tensor<2x2x!q.uniform<i32:f32, 0.0002:0>>
// INT-NEXT:    func.return %y

// NOSPLIT-LABEL: func.func @int16(
// NOSPLIT-NEXT:    %w = q.constant
// NOSPLIT-NEXT:    %bias = q.constant
// NOSPLIT-NEXT:    %y = qi.matmul %a, %w, %bias {onnx_name = "fc"}

// A per-channel constant (u16, zero points 0 and 600 = 2 * 256 + 88): per-channel parts
// and per-channel requants along the accumulator's last axis.
func.func @int16_per_channel(%a: tensor<1x2x!q.uniform<u16:f32, 0.5:32768>>) -> tensor<1x2x!q.per_axis<i32:f32:1, {0.125:0, 0.0625:0}>> {
  %w = q.constant dense<[[0, 65535], [600, 1]]> : tensor<2x2xui16> {onnx_name = "pc"} : tensor<2x2x!q.per_axis<u16:f32:1, {0.25:0, 0.125:600}>>
  %y = qi.matmul %a, %w {onnx_name = "pcm"} : (tensor<1x2x!q.uniform<u16:f32, 0.5:32768>>, tensor<2x2x!q.per_axis<u16:f32:1, {0.25:0, 0.125:600}>>) -> tensor<1x2x!q.per_axis<i32:f32:1, {0.125:0, 0.0625:0}>>
  func.return %y : tensor<1x2x!q.per_axis<i32:f32:1, {0.125:0, 0.0625:0}>>
}

// INT-LABEL: func.func @int16_per_channel(
// INT-NEXT:    %a_hi = qi.lookup %a {{.*}} -> tensor<1x2x!q.uniform<u8:f32, 128.0:128>>
// INT-NEXT:    %a_lo = qi.lookup %a {{.*}} -> tensor<1x2x!q.uniform<u8:f32, 0.5:0>>
// INT-NEXT:    %w_hi = q.constant dense<{{\[\[}}0, 255], [2, 0]]> : tensor<2x2xui8> {onnx_name = "pc/hi"} : tensor<2x2x!q.per_axis<u8:f32:1, {64.0:0, 32.0:2}>>
// INT-NEXT:    %w_lo = q.constant dense<{{\[\[}}0, 255], [88, 1]]> : tensor<2x2xui8> {onnx_name = "pc/lo"} : tensor<2x2x!q.per_axis<u8:f32:1, {0.25:0, 0.125:88}>>
// INT:         %y_rescale16 = q.requant %y_hi_hi {onnx_name = "pcm/rescale16", multiplier = array<i32: 1073741824, 1073741824>, shift = array<i64: 9, 9>, rounding = "tflite", axis = 1 : i64}
// INT:         %y = qi.add %y_rescale8, %y_lo_lo {onnx_name = "pcm/add0"} : ({{.*}}) -> tensor<1x2x!q.per_axis<i32:f32:1, {0.125:0, 0.0625:0}>>

// 8-bit and 16 x 8-bit products are left alone.
func.func @int8(%a: tensor<2x3x!q.uniform<i8:f32, 0.1:0>>, %b: tensor<3x2x!q.uniform<i8:f32, 0.1:0>>, %c: tensor<3x2x!q.uniform<i16:f32, 0.1:0>>) -> (tensor<2x2x!q.uniform<i32:f32, 0.010000000000000002:0>>, tensor<2x2x!q.uniform<i32:f32, 0.010000000000000002:0>>) {
  %y = qi.matmul %a, %b {onnx_name = "mm8"} : (tensor<2x3x!q.uniform<i8:f32, 0.1:0>>, tensor<3x2x!q.uniform<i8:f32, 0.1:0>>) -> tensor<2x2x!q.uniform<i32:f32, 0.010000000000000002:0>>
  %z = qi.matmul %a, %c {onnx_name = "mm8x16"} : (tensor<2x3x!q.uniform<i8:f32, 0.1:0>>, tensor<3x2x!q.uniform<i16:f32, 0.1:0>>) -> tensor<2x2x!q.uniform<i32:f32, 0.010000000000000002:0>>
  func.return %y, %z : tensor<2x2x!q.uniform<i32:f32, 0.010000000000000002:0>>, tensor<2x2x!q.uniform<i32:f32, 0.010000000000000002:0>>
}

// INT-LABEL: func.func @int8(
// INT-NEXT:    %y = qi.matmul %a, %b {onnx_name = "mm8"}
// INT-NEXT:    %z = qi.matmul %a, %c {onnx_name = "mm8x16"}
// INT-NEXT:    func.return %y, %z

// A computed per-channel 16-bit rhs has no per-tensor lookup split: reported.
func.func @int16_computed_per_channel(%a: tensor<1x2x!q.uniform<i16:f32, 0.5:0>>, %b: tensor<2x2x!q.per_axis<i16:f32:1, {0.25:0, 0.125:0}>>) -> tensor<1x2x!q.per_axis<i32:f32:1, {0.125:0, 0.0625:0}>> {
  %y = qi.matmul %a, %b {onnx_name = "pcc"} : (tensor<1x2x!q.uniform<i16:f32, 0.5:0>>, tensor<2x2x!q.per_axis<i16:f32:1, {0.25:0, 0.125:0}>>) -> tensor<1x2x!q.per_axis<i32:f32:1, {0.125:0, 0.0625:0}>>
  func.return %y : tensor<1x2x!q.per_axis<i32:f32:1, {0.125:0, 0.0625:0}>>
}

// INT-LABEL: func.func @int16_computed_per_channel(
// INT-NEXT:    %y = qi.matmul %a, %b {onnx_name = "pcc"}
// INT-NEXT:    func.return %y

// The report: one line per product left as it is, in program order.
// WARN:      matmul-decompose: nn.matmul 'scores' left as it is (K 4 > max-k 2, to-conv): its right-hand side is not an nn.constant (or its data was elided)
// WARN-NEXT: matmul-decompose: nn.matmul 'batched' not turned into a conv: its constant right-hand side is batched (2x4x1)
// WARN-NEXT: matmul-decompose: nn.matmul 'dynamic' left as it is (K 4 > max-k 2, to-conv): dynamic shape tensor<?x4xf32>
// WARN-NEXT: matmul-decompose: qi.matmul 'pcc' left as it is (16 x 16-bit): a per-channel operand computed at run time has no per-tensor byte split (qi.lookup results are per tensor)
// WARN-NOT:  matmul-decompose
