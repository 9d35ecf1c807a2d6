"""Train and export the small test models bundled under tests/data/.

Run from anywhere:  python scripts/make_test_models.py

Writes, under tests/data/:
  digits_cnn.onnx     conv-bn-relu stem + depthwise-separable blocks (BatchNormalization kept)
  tiny_vit.onnx       2-block vision transformer with explicit MatMul/Softmax attention
  digits_test.npz     test split: `input` float32 [M,1,8,8] (pixels / 16), `label` int64 [M]
  digits_calib.npz    64 training samples in `input` (for calibration)
  digits_sample.npy   the first 4 test inputs, float32 [4,1,8,8]
  README.md           how the files were made, accuracies, sizes and sha256 digests

Everything is deterministic: fixed seeds, a fixed stratified split, single-threaded
deterministic torch kernels. torch is a dev-only dependency used here and nowhere else.
"""

from __future__ import annotations

import hashlib
import time
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "tests" / "data"

SEED = 0
OPSET = 17
NUM_CLASSES = 10
CALIB_SAMPLES = 64
SAMPLE_INPUTS = 4

ALLOWED_OPS = frozenset(
    """
    Conv ConvTranspose BatchNormalization Relu Clip LeakyRelu PRelu Sigmoid HardSigmoid
    HardSwish Tanh Erf Gelu Add Sub Mul Div Pow Sqrt Reciprocal Exp MatMul Gemm Softmax
    LayerNormalization ReduceMean ReduceSum ReduceMax GlobalAveragePool AveragePool MaxPool
    Concat Split Slice Reshape Flatten Transpose Squeeze Unsqueeze Resize Pad Gather Constant
    Identity Cast Shape Expand Where Equal
    """.split()
)

MIN_ACCURACY = {"digits_cnn": 0.95, "tiny_vit": 0.90}


# --------------------------------------------------------------------------- data


def load_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits scaled to [0, 1] as [N,1,8,8] float32, split 75/25 stratified (random_state=0)."""
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None, :, :]
    labels = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=0.25, random_state=0, stratify=labels
    )
    return x_train, x_test, y_train, y_test


# --------------------------------------------------------------------------- models


def conv_bn(
    in_ch: int, out_ch: int, kernel: int, stride: int = 1, groups: int = 1
) -> list[nn.Module]:
    return [
        nn.Conv2d(in_ch, out_ch, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]


class ResidualBlock(nn.Module):
    """Depthwise 3x3 + BN + ReLU, pointwise + BN, add the block input, ReLU."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *conv_bn(channels, channels, 3, groups=channels),
            nn.ReLU(),
            *conv_bn(channels, channels, 1),
        )
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(x + self.body(x))


class DigitsCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            # stem: 1 -> 16, 8x8
            *conv_bn(1, 16, 3),
            nn.ReLU(),
            # block 1: depthwise-separable 16 -> 32, 8x8
            *conv_bn(16, 16, 3, groups=16),
            nn.ReLU6(),
            *conv_bn(16, 32, 1),
            nn.ReLU(),
            # block 2: depthwise-separable with stride 2, 32 -> 32, 4x4
            *conv_bn(32, 32, 3, stride=2, groups=32),
            nn.ReLU6(),
            *conv_bn(32, 32, 1),
            nn.ReLU(),
            # block 3: depthwise-separable with a residual add
            ResidualBlock(32),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(32, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.features(x))
        return self.classifier(torch.flatten(x, 1))


class SelfAttention(nn.Module):
    """Multi-head self-attention written out with MatMul and Softmax."""

    def __init__(self, dim: int, heads: int, tokens: int) -> None:
        super().__init__()
        self.dim = dim
        self.heads = heads
        self.head_dim = dim // heads
        self.tokens = tokens
        self.scale = self.head_dim**-0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        # [N, T, C] -> [N, H, T, D]; the batch is -1 so the reshape target is a constant
        return x.reshape(-1, self.tokens, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q = self.split_heads(self.q(x))
        k = self.split_heads(self.k(x))
        v = self.split_heads(self.v(x))
        attention = torch.softmax(q @ k.transpose(-2, -1) * self.scale, dim=-1)
        merged = (attention @ v).transpose(1, 2).reshape(-1, self.tokens, self.dim)
        return self.out(merged)


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, tokens: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attention = SelfAttention(dim, heads, tokens)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(self, dim: int = 32, heads: int = 2, depth: int = 2, hidden: int = 64) -> None:
        super().__init__()
        self.dim = dim
        self.tokens = 16  # 8x8 image, 2x2 patches
        self.patch_embed = nn.Conv2d(1, dim, kernel_size=2, stride=2)
        self.position = nn.Parameter(torch.randn(1, self.tokens, dim) * 0.02)
        self.blocks = nn.Sequential(
            *[TransformerBlock(dim, heads, self.tokens, hidden) for _ in range(depth)]
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)  # [N, C, 4, 4]
        x = x.reshape(-1, self.dim, self.tokens).transpose(1, 2)  # [N, T, C]
        x = self.blocks(x + self.position)
        x = self.norm(x).mean(dim=1)
        return self.head(x)


# --------------------------------------------------------------------------- training


def train(
    model: nn.Module,
    x_train: np.ndarray,
    y_train: np.ndarray,
    epochs: int,
    lr: float,
    weight_decay: float,
    batch_size: int = 64,
) -> None:
    inputs = torch.from_numpy(x_train)
    targets = torch.from_numpy(y_train)
    generator = torch.Generator().manual_seed(SEED)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = (len(inputs) + batch_size - 1) // batch_size
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch
    )
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), batch_size):
            batch = order[start : start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(inputs[batch]), targets[batch])
            loss.backward()
            optimizer.step()
            scheduler.step()
    model.eval()


def torch_logits(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


# --------------------------------------------------------------------------- export and checks


def export(model: nn.Module, path: Path, keep_batchnorm: bool) -> None:
    """Legacy TorchScript export, opset 17, dynamic batch, weights embedded.

    The EVAL training mode fuses Conv+BatchNormalization; PRESERVE (with the model in eval
    mode) keeps the BatchNormalization nodes as inference-mode BN. Constant folding is off
    in that case (torch recommends it for PRESERVE, and the CNN has nothing to fold).
    """
    model.eval()
    mode = torch.onnx.TrainingMode.PRESERVE if keep_batchnorm else torch.onnx.TrainingMode.EVAL
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export")
        torch.onnx.export(
            model,
            (torch.zeros(1, 1, 8, 8),),
            str(path),
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=OPSET,
            training=mode,
            do_constant_folding=not keep_batchnorm,
            dynamo=False,
        )


def check_onnx(path: Path) -> Counter[str]:
    """Validate the file and return its op-type counts; fail on anything unexpected."""
    model = onnx.load(str(path))
    onnx.checker.check_model(model, full_check=True)
    for initializer in model.graph.initializer:
        assert initializer.data_location != onnx.TensorProto.EXTERNAL, initializer.name
    assert all(node.domain in ("", "ai.onnx") for node in model.graph.node)
    ops = Counter(node.op_type for node in model.graph.node)
    unexpected = set(ops) - ALLOWED_OPS
    assert not unexpected, f"{path.name}: unexpected op types {sorted(unexpected)}"
    return ops


def onnx_logits(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["logits"], {"input": x})[0]


def describe_io(path: Path) -> str:
    graph = onnx.load(str(path)).graph
    parts = []
    for value in [*graph.input, *graph.output]:
        dims = [d.dim_param or str(d.dim_value) for d in value.type.tensor_type.shape.dim]
        parts.append(f"`{value.name}` [{','.join(dims)}]")
    return " -> ".join(parts)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- main


ARCHITECTURES = {
    "digits_cnn": (
        "Conv3x3(1->16)+BN+ReLU stem; block 1: depthwise Conv3x3(groups=16)+BN+ReLU6 (Clip), "
        "pointwise Conv1x1(16->32)+BN+ReLU; block 2: depthwise Conv3x3 stride 2 (groups=32)"
        "+BN+ReLU6, pointwise Conv1x1(32->32)+BN+ReLU; block 3: depthwise Conv3x3+BN+ReLU, "
        "pointwise Conv1x1(32->32)+BN, residual Add of the block input, ReLU; "
        "GlobalAveragePool, Flatten, Linear(32->10) (Gemm). Convs have no bias; "
        "BatchNormalization nodes are kept (exported with TrainingMode.PRESERVE in eval mode)."
    ),
    "tiny_vit": (
        "patch embedding Conv2x2 stride 2 (1->32, 16 patches), Reshape+Transpose to [N,16,32], "
        "learned position embedding (Add); 2 pre-LayerNorm transformer blocks, each: "
        "LayerNormalization, self-attention with 2 heads written out (q/k/v Linear -> "
        "Reshape/Transpose to heads, MatMul q@k^T, Mul by 1/sqrt(16), Softmax, MatMul @v, "
        "merge heads, output Linear), residual Add; LayerNormalization, MLP Linear(32->64), "
        "GELU (exact, exported as the Div/Erf/Add/Mul/Mul pattern), Linear(64->32), residual "
        "Add; final LayerNormalization, ReduceMean over tokens, Linear(32->10) (Gemm)."
    ),
}


GRAPH_NOTES = [
    "No Shape/Gather/Concat chains: every Reshape target is a Constant node with -1 for the "
    "batch, e.g. [-1,16,2,16] (split heads), [-1,16,32] (merge heads), [-1,32,16] (patches). "
    "The only symbolic dimension is `batch` on `input` and `logits`; no value_info is stored.",
    "digits_cnn: Conv nodes have no bias input (bias=False before BN). BatchNormalization has "
    "training_mode=0 and carries torch's momentum attribute (0.9). Clip min/max (0, 6) are "
    "scalar Constant nodes, not initializers.",
    "tiny_vit: 3-D Linear layers become MatMul + Add with the weight pre-transposed into an "
    "anonymous [in,out] initializer (`onnx::MatMul_NNN`) and the bias as the FIRST Add "
    "operand. k^T is folded into the head-split Transpose (perm [0,2,3,1]); q and v use "
    "perm [0,2,1,3]. The 1/sqrt(d) scale is a Mul by Constant 0.25 after q@k^T. "
    "ReduceMean uses the opset-17 `axes` attribute. The 2-D classifier Linear is Gemm "
    "(transB=1). LayerNormalization epsilon is 1e-5 (stored as float32).",
]


def write_readme(
    results: dict[str, dict[str, object]], data_files: list[Path], sample_labels: list[int]
) -> None:
    lines = [
        "# Test data",
        "",
        "Generated by `python scripts/make_test_models.py` (torch "
        f"{torch.__version__.split('+')[0]}, onnx {onnx.__version__}, onnxruntime "
        f"{ort.__version__}; legacy TorchScript exporter `dynamo=False`, opset {OPSET}). "
        "Do not edit by hand: rerun the script.",
        "",
        "Data: `sklearn.datasets.load_digits()` (1797 8x8 images, 10 classes), pixels divided by "
        "16 to [0,1], shaped [N,1,8,8] float32. Split with `train_test_split(test_size=0.25, "
        "random_state=0, stratify=labels)`: 1347 train / 450 test.",
        "",
        "| file | bytes | contents |",
        "| --- | ---: | --- |",
    ]
    contents = {
        "digits_test.npz": "test split: `input` float32 [450,1,8,8], `label` int64 [450]",
        "digits_calib.npz": f"`input`: the first {CALIB_SAMPLES} samples of the (shuffled) "
        "train split, float32 [64,1,8,8]",
        "digits_sample.npy": f"the first {SAMPLE_INPUTS} test inputs, float32 [4,1,8,8] "
        f"(labels {sample_labels})",
    }
    for path in data_files:
        lines.append(f"| `{path.name}` | {path.stat().st_size} | {contents[path.name]} |")
    for name, result in results.items():
        lines.append(f"| `{name}.onnx` | {result['size']} | model, see below |")
    lines.append("")
    for name, result in results.items():
        ops = result["ops"]
        assert isinstance(ops, Counter)
        op_list = ", ".join(f"{op} {count}" for op, count in sorted(ops.items()))
        lines += [
            f"## {name}.onnx",
            "",
            f"- architecture: {ARCHITECTURES[name]}",
            f"- inputs/outputs: {result['io']} (weights embedded, no external data)",
            f"- test accuracy (onnxruntime, fp32, digits_test.npz): {result['accuracy']:.4f} "
            f"(required >= {MIN_ACCURACY[name]:.2f})",
            f"- size: {result['size']} bytes",
            f"- sha256: `{result['sha256']}`",
            f"- op types: {op_list}",
            "",
        ]
    lines += ["## Notes on the exported graphs", ""]
    lines += [f"- {note}" for note in GRAPH_NOTES]
    lines.append("")
    (DATA_DIR / "README.md").write_text("\n".join(lines))


def main() -> None:
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    torch.set_num_threads(1)  # bit-for-bit reproducible training
    torch.use_deterministic_algorithms(True)
    DATA_DIR.mkdir(parents=True, exist_ok=True)

    x_train, x_test, y_train, y_test = load_split()
    test_path = DATA_DIR / "digits_test.npz"
    calib_path = DATA_DIR / "digits_calib.npz"
    sample_path = DATA_DIR / "digits_sample.npy"
    np.savez(test_path, input=x_test, label=y_test)
    np.savez(calib_path, input=x_train[:CALIB_SAMPLES])
    np.save(sample_path, x_test[:SAMPLE_INPUTS])

    recipes: dict[str, tuple[nn.Module, dict[str, float], bool]] = {
        "digits_cnn": (DigitsCNN(), {"epochs": 40, "lr": 1e-2, "weight_decay": 1e-4}, True),
        "tiny_vit": (TinyViT(), {"epochs": 150, "lr": 3e-3, "weight_decay": 0.05}, False),
    }
    results: dict[str, dict[str, object]] = {}
    for name, (model, hyper, keep_batchnorm) in recipes.items():
        torch.manual_seed(SEED)
        start = time.perf_counter()
        train(model, x_train, y_train, int(hyper["epochs"]), hyper["lr"], hyper["weight_decay"])
        seconds = time.perf_counter() - start

        path = DATA_DIR / f"{name}.onnx"
        export(model, path, keep_batchnorm)
        ops = check_onnx(path)
        if keep_batchnorm:
            assert ops["BatchNormalization"] > 0, "BatchNormalization was folded away"

        logits = onnx_logits(path, x_test)
        max_diff = float(np.abs(logits - torch_logits(model, x_test)).max())
        accuracy = float((logits.argmax(axis=1) == y_test).mean())
        print(
            f"{name}: trained in {seconds:.1f}s, onnxruntime accuracy {accuracy:.4f}, "
            f"max |ort - torch| {max_diff:.2e}"
        )
        print(f"  {describe_io(path)}")
        print(f"  ops: {dict(sorted(ops.items()))}")
        assert max_diff < 1e-4, f"{name}: onnxruntime disagrees with torch"
        assert accuracy >= MIN_ACCURACY[name], f"{name}: accuracy {accuracy:.4f} too low"
        results[name] = {
            "accuracy": accuracy,
            "size": path.stat().st_size,
            "sha256": sha256(path),
            "ops": ops,
            "io": describe_io(path),
        }

    write_readme(results, [test_path, calib_path, sample_path], y_test[:SAMPLE_INPUTS].tolist())
    print(f"wrote {DATA_DIR}")


if __name__ == "__main__":
    main()
