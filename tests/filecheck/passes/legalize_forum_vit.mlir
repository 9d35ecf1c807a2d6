// The forum case (legality_forum_vit.mlir) with --legalize on hailo8: every 16 -> 8 bit
// precision change is folded into the layer before it (it writes the 8-bit encoding
// of its consumer directly, precision_mode a16_w16_a8), the attention matmuls (two
// activations, 8 bits only on Hailo) move to a8_w8, the weights become per-tensor and
// the activations unsigned. Each change is printed; the result is legal on hailo8 and
// only 8 -> 16 bit precision changes remain. Its top-1 is measured in
// tests/unit/test_legality.py.

// RUN: rm -rf %t && quantir quantize %data/tiny_vit.onnx --calib %data/digits_calib.npz --script %data/configs/vit_a16.alls --target hailo8 --legalize --report %t.json -o %t | filecheck %s
// RUN: filecheck %s --check-prefix=IR < %t/model.q.mlir
// RUN: quantir-opt %t/model.q.mlir -p 'legality{target=hailo8}' -o %t/checked.mlir
// RUN: filecheck %s --check-prefix=JSON < %t.json
// In a pass pipeline: legalize, then check.
// RUN: quantir-opt %data/tiny_vit.onnx -p 'fuse-activation,calibrate{data="%data/digits_calib.npz"},quantize{script="%data/configs/vit_a16.alls"},legalize{target=hailo8},legality{target=hailo8}' 2>&1 >/dev/null | filecheck %s --check-prefix=OPT

// CHECK:      legalize: q.quantize '80 activation tensors': re-expressed on unsigned storage (zero points moved by 2^(bits-1); the values are unchanged) for hailo8
// CHECK:      legalize: nn.conv '/patch_embed/Conv': precision_mode a16_w16 (weights re-quantized to 16 bits per tensor; bias re-quantized (i32)) for hailo8
// CHECK:      legalize: nn.matmul '/blocks/blocks.0/attention/MatMul': precision_mode a16_w16 -> a8_w8 (reads operand 0 at 8 bits; reads operand 1 at 8 bits; writes u8) for hailo8
// CHECK:      legalize: nn.matmul '/blocks/blocks.0/attention/MatMul_1': precision_mode a16_w16 -> a8_w8 (reads operand 0 at 8 bits; reads operand 1 at 8 bits; writes u8 through /blocks/blocks.0/attention/Transpose_3, /blocks/blocks.0/attention/Reshape_3) for hailo8
// CHECK:      legalize: q.precision_change '/Transpose_output_0.to_8bit': folded into /patch_embed/Conv: precision_mode a16_w16 -> a16_w16_a8 (writes u8 through /Reshape, /Transpose); /Add reads it as before
// CHECK:      legalize: q.precision_change '/blocks/blocks.0/attention/Transpose_output_0.to_8bit': folded into /blocks/blocks.0/attention/q/MatMul: precision_mode a16_w16 -> a16_w16_a8
// CHECK:      legalize: q.precision_change '/blocks/blocks.0/attention/out/Add_output_0.to_8bit': folded into /blocks/blocks.0/attention/out/MatMul: precision_mode a16_w16 -> a16_w16_a8 (writes u8); /blocks/blocks.0/Add reads it as before
// CHECK:      legalize: q.precision_change '/blocks/blocks.0/mlp/mlp.0/Add_output_0.to_8bit': folded into /blocks/blocks.0/mlp/mlp.0/MatMul: precision_mode a16_w16 -> a16_w16_a8 (writes u8); /blocks/blocks.0/mlp/mlp.1/Mul reads it as before
// CHECK:      legalize: q.precision_change '/blocks/blocks.0/mlp/mlp.2/Add_output_0.to_8bit': folded into /blocks/blocks.0/mlp/mlp.2/MatMul
// CHECK:      legalize: q.precision_change '/blocks/blocks.1/mlp/mlp.2/Add_output_0.to_8bit': folded into /blocks/blocks.1/mlp/mlp.2/MatMul
// CHECK:      hailo8: legal (70 ops checked)
// CHECK:      wrote {{.*}}model.q.mlir

// The conv writes u8 itself; no 16 -> 8 precision change is left.
// IR:     q.quantize %_patch_embed_Conv_output {onnx_name = "/patch_embed/Conv_output_0"} : tensor<1x32x4x4xf32> -> tensor<1x32x4x4x!q.uniform<u8:f32,
// IR-NOT: q.precision_change {{.*}}!q.uniform<u16{{.*}}-> tensor<{{.*}}!q.uniform<u8
// IR:     q.precision_change {{.*}} : tensor<1x32x!q.uniform<u8:f32, {{.*}}>> -> tensor<1x32x!q.uniform<u16:f32,
// IR-NOT: q.precision_change {{.*}}!q.uniform<u16{{.*}}-> tensor<{{.*}}!q.uniform<u8

// JSON:      "target": "hailo8",
// JSON:      "legal": true,
// JSON:      "diagnostics": [],
// JSON:      "changes": [
// JSON:        "kind": "precision-change",
// JSON-NEXT:   "op": "q.precision_change",
// JSON-NEXT:   "name": "/Transpose_output_0.to_8bit",
// JSON-NEXT:   "text": "folded into /patch_embed/Conv: precision_mode a16_w16 -> a16_w16_a8 (writes u8 through /Reshape, /Transpose); /Add reads it as before"

// OPT: quantir-opt: warning: legalize{target=hailo8}: q.precision_change '_Transpose_output.to_8bit': folded into /patch_embed/Conv: precision_mode a16_w16 -> a16_w16_a8 (writes u8 through /Reshape, /Transpose); /Add reads it as before
// OPT-NOT: error
