// The Hailo community forum case (seeds/hailo-forum-vit-precision-change.txt) on the
// tiny ViT: the script puts the conv, the dense (Gemm) and the matmul layers in a16_w16
// and keeps the softmax at a8_w8 (tests/data/configs/vit_a16.alls). The quantize pass
// inserts a q.precision_change wherever a 16-bit layer feeds an 8-bit one; Hailo
// rejected those ("precision_change14: precision_mode: a16_w16_a8"). On hailo8 the
// legality check names every 16 -> 8 bit change with the two layers it sits between,
// the script line that set each width and the fixes; nothing is written.

// RUN: rm -rf %t && not quantir quantize %data/tiny_vit.onnx --calib %data/digits_calib.npz --script %data/configs/vit_a16.alls --target hailo8 --report %t.json -o %t 2>&1 | filecheck %s
// RUN: not ls %t
// RUN: filecheck %s --check-prefix=JSON < %t.json
// The same check in a pass pipeline (the legality pass takes the target as an option).
// RUN: not quantir-opt %data/tiny_vit.onnx -p 'fuse-activation,calibrate{data="%data/digits_calib.npz"},quantize{script="%data/configs/vit_a16.alls"},legality{target=hailo8}' 2>&1 | filecheck %s --check-prefix=OPT

// CHECK:     quantir: error: hailo8: 28 ops cannot run as configured (4 precision-mode, 14 per-channel, 9 precision-change, 1 activation-signedness); fix the lines below or rerun with --legalize
// CHECK:     quantir: error: q.precision_change '/Transpose_output_0.to_8bit' (between /Transpose and /Add): precision_mode a16_w16_a8, conversion i16 -> i8, signed_output true; hailo8 converts u8 -> u16, not i16 -> i8 (hailo8.toml:[[LINE:[0-9]+]]); set by /patch_embed/Conv writes 16 bits ({{.*}}vit_a16.alls:9), /Add reads 8 bits (default); fix: make /patch_embed/Conv write 8 bits: quantization_param({/patch_embed/Conv}, precision_mode=a16_w16_a8); or change {{.*}}vit_a16.alls:9 so both sides use one width; or run with --legalize (folds it into /patch_embed/Conv, which then writes i8 directly)
// The attention matmuls (two activations: Hailo's `matmul` layer) have no a16_w16.
// CHECK:     quantir: error: nn.matmul '/blocks/blocks.0/attention/MatMul' (ONNX layer /blocks/blocks.0/attention/MatMul): precision_mode a16_w16, output i16; hailo8 runs batch_matmul in a8_w8 (hailo8.toml:{{[0-9]+}}); set by {{.*}}vit_a16.alls:10; fix: set precision_mode=a8_w8: quantization_param({/blocks/blocks.0/attention/MatMul}, precision_mode=a8_w8); or change {{.*}}vit_a16.alls:10 so it does not set a16_w16 on /blocks/blocks.0/attention/MatMul; or run with --legalize (sets a8_w8)
// CHECK:     q.precision_change '/blocks/blocks.0/attention/MatMul_output_0.to_8bit' (between /blocks/blocks.0/attention/MatMul and /blocks/blocks.0/attention/Mul): precision_mode a16_w16_a8, {{.*}}; set by /blocks/blocks.0/attention/MatMul writes 16 bits ({{.*}}vit_a16.alls:10), /blocks/blocks.0/attention/Mul reads 8 bits (default); fix:
// CHECK:     q.precision_change '/blocks/blocks.0/attention/out/Add_output_0.to_8bit' (between /blocks/blocks.0/attention/out/MatMul and /blocks/blocks.0/Add): precision_mode a16_w16_a8, {{.*}}; set by /blocks/blocks.0/attention/out/MatMul writes 16 bits ({{.*}}vit_a16.alls:10), /blocks/blocks.0/Add reads 8 bits (default); fix: make /blocks/blocks.0/attention/out/MatMul write 8 bits: quantization_param({/blocks/blocks.0/attention/out/MatMul}, precision_mode=a16_w16_a8);
// CHECK:     q.precision_change '/blocks/blocks.0/mlp/mlp.0/Add_output_0.to_8bit' (between /blocks/blocks.0/mlp/mlp.0/MatMul and /blocks/blocks.0/mlp/mlp.1/Mul): precision_mode a16_w16_a8, conversion i16 -> i8, signed_output true, also read by /blocks/blocks.0/mlp/mlp.1/Div; {{.*}}; set by /blocks/blocks.0/mlp/mlp.0/MatMul writes 16 bits ({{.*}}vit_a16.alls:10), /blocks/blocks.0/mlp/mlp.1/Mul reads 8 bits (default); fix:
// CHECK:     q.precision_change '/blocks/blocks.0/mlp/mlp.2/Add_output_0.to_8bit' (between /blocks/blocks.0/mlp/mlp.2/MatMul and /blocks/blocks.0/Add_1): {{.*}} set by /blocks/blocks.0/mlp/mlp.2/MatMul writes 16 bits ({{.*}}vit_a16.alls:10), /blocks/blocks.0/Add_1 reads 8 bits (default); fix:
// CHECK:     q.precision_change '/blocks/blocks.1/attention/MatMul_output_0.to_8bit' (between /blocks/blocks.1/attention/MatMul and /blocks/blocks.1/attention/Mul): {{.*}} ({{.*}}vit_a16.alls:10), {{.*}} (default); fix:
// CHECK:     q.precision_change '/blocks/blocks.1/attention/out/Add_output_0.to_8bit' (between /blocks/blocks.1/attention/out/MatMul and /blocks/blocks.1/Add): {{.*}} ({{.*}}vit_a16.alls:10), {{.*}} (default); fix:
// CHECK:     q.precision_change '/blocks/blocks.1/mlp/mlp.0/Add_output_0.to_8bit' (between /blocks/blocks.1/mlp/mlp.0/MatMul and /blocks/blocks.1/mlp/mlp.1/Mul): {{.*}} ({{.*}}vit_a16.alls:10), {{.*}} (default); fix:
// CHECK:     q.precision_change '/blocks/blocks.1/mlp/mlp.2/Add_output_0.to_8bit' (between /blocks/blocks.1/mlp/mlp.2/MatMul and /blocks/blocks.1/Add_1): {{.*}} ({{.*}}vit_a16.alls:10), {{.*}} (default); fix:
// CHECK:     quantir: error: q.quantize '80 activation tensors' ({{.*}}): storage 46 x i16, 34 x i8; hailo8 stores activations unsigned
// CHECK-NOT: q.precision_change
// CHECK-NOT: wrote

// JSON:      "target": "hailo8",
// JSON:      "legal": false,
// JSON:      "summary": {
// JSON-NEXT:   "precision-mode": 4,
// JSON-NEXT:   "per-channel": 14,
// JSON-NEXT:   "precision-change": 9,
// JSON-NEXT:   "activation-signedness": 1
// JSON:      "kind": "precision-change",
// JSON-NEXT: "op": "q.precision_change",
// JSON-NEXT: "name": "/Transpose_output_0.to_8bit",
// JSON-NEXT: "layers": [
// JSON-NEXT:   "/Transpose",
// JSON-NEXT:   "/Add"
// JSON-NEXT: ],
// JSON-NEXT: "between": true,
// JSON-NEXT: "config": {
// JSON-NEXT:   "precision_mode": "a16_w16_a8",
// JSON-NEXT:   "conversion": "i16 -> i8",
// JSON-NEXT:   "signed_output": "true"
// JSON-NEXT: },
// JSON-NEXT: "rule": "hailo8 converts u8 -> u16, not i16 -> i8",
// JSON-NEXT: "rule_at": "hailo8.toml:[[LINE:[0-9]+]]",
// JSON-NEXT: "set_by": [
// JSON-NEXT:   "/patch_embed/Conv writes 16 bits ({{.*}}vit_a16.alls:9)",
// JSON-NEXT:   "/Add reads 8 bits (default)"
// JSON-NEXT: ],
// JSON-NEXT: "fixes": [
// JSON-NEXT:   "make /patch_embed/Conv write 8 bits: quantization_param({/patch_embed/Conv}, precision_mode=a16_w16_a8)",

// OPT: quantir-opt: error: hailo8: 28 ops cannot run as configured
// OPT: quantir-opt: error: q.precision_change '_Transpose_output.to_8bit' (between /Transpose and /Add): {{.*}}; set by /patch_embed/Conv writes 16 bits ({{.*}}vit_a16.alls:9), /Add reads 8 bits (default);
