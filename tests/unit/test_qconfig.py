"""QuantConfig: precision modes, rules and globs, the Python API and model scripts."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import onnx
import pytest

from quantir.errors import QuantirError
from quantir.passes.encodings_file import EncodingOverrides
from quantir.passes.qconfig import (
    A8_W8,
    CalibrationSettings,
    LayerConfig,
    LayerRule,
    PrecisionMode,
    QuantConfig,
    QuantirWarning,
    load_model_script,
    normalize_op_kind,
    parse_model_script,
)
from tests.conftest import DATA

CONFIGS = DATA / "configs"


def parse(text: str, base: QuantConfig | None = None) -> QuantConfig:
    """Parse a script that must produce no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return parse_model_script(text, "script.alls", base)


def parse_error(text: str) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", QuantirWarning)
        with pytest.raises(QuantirError) as caught:
            parse_model_script(text, "script.alls")
    message = str(caught.value)
    assert "\n" not in message
    return message


# -- precision modes ---------------------------------------------------------------------


@pytest.mark.parametrize(("text", "widths"), [
    ("a8_w8", (8, 8, 8)), ("a8_w4", (8, 4, 8)), ("a16_w16", (16, 16, 16)),
    ("a16_w16_a8", (16, 16, 8)), ("a8_w8_a16", (8, 8, 16)), ("a16_w8", (16, 8, 16)),
    ("a16_w8_a16", (16, 8, 16)), (" a4_w4 ", (4, 4, 4)),
])
def test_precision_mode_parses(text: str, widths: tuple[int, int, int]) -> None:
    mode = PrecisionMode.parse(text)
    assert (mode.activation_bits, mode.weight_bits, mode.output_bits) == widths
    assert PrecisionMode.parse(str(mode)) == mode


def test_precision_mode_text_is_canonical() -> None:
    assert str(PrecisionMode(16, 16, 8)) == "a16_w16_a8"
    assert str(PrecisionMode(16, 8, 16)) == "a16_w8"
    assert str(PrecisionMode.parse("a8_w8_a8")) == "a8_w8"
    assert A8_W8 == PrecisionMode.parse("a8_w8")


@pytest.mark.parametrize("text", ["", "a8", "w8_a8", "a7_w8", "a8_w32", "a8_w8_a8_w8",
                                  "A8_W8", "a8-w8", "int8", "a8_w8_", "a8_w8_a12"])
def test_precision_mode_rejects(text: str) -> None:
    with pytest.raises(QuantirError, match=r"a<bits>_w<bits>.*a16_w16_a8"):
        PrecisionMode.parse(text)


def test_precision_mode_checks_widths() -> None:
    with pytest.raises(QuantirError, match="weight width 3"):
        PrecisionMode(8, 3, 8)


# -- layer configs and rules -------------------------------------------------------------


def test_layer_config_defaults() -> None:
    config = LayerConfig()
    assert config.precision == A8_W8
    assert (config.weights, config.activations) == ("per-channel", "asymmetric")
    assert config.bias_mode == "single_scale_decomposition"
    assert not config.float_fallback
    assert config.source == "default"


@pytest.mark.parametrize(("field", "value", "fragment"), [
    ("weights", "per_row", "weights 'per_row' is not valid; use one of per-channel, per-tensor"),
    ("activations", "sym", "activations 'sym'"),
    ("bias_mode", "int8", "bias_mode 'int8'"),
    ("float_fallback", "yes", "float_fallback must be True or False"),
    ("precision", "a8_w8", "PrecisionMode.parse"),
])
def test_layer_config_rejects(field: str, value: object, fragment: str) -> None:
    with pytest.raises(QuantirError, match="^here: ") as caught:
        LayerConfig(**{field: value, "source": "here"})  # type: ignore[arg-type]
    assert fragment in str(caught.value)


def test_rule_validates_where_it_is_written() -> None:
    with pytest.raises(QuantirError, match="^x.py:3: unknown layer setting 'colour'"):
        LayerRule(("conv*",), {"colour": "red"}, "x.py:3")
    with pytest.raises(QuantirError, match="^x.py:4: weights 'rows'"):
        LayerRule(("conv*",), {"weights": "rows"}, "x.py:4")
    with pytest.raises(QuantirError, match="^x.py:5: the rule sets nothing"):
        LayerRule(("conv*",), {}, "x.py:5")
    with pytest.raises(QuantirError, match="^x.py:6: a layer rule needs at least one glob"):
        LayerRule((), {"float_fallback": True}, "x.py:6")


def test_rule_settings_are_a_copy() -> None:
    settings: dict[str, object] = {"float_fallback": True}
    rule = LayerRule(("a",), settings, "here")
    settings["float_fallback"] = False
    assert rule.settings["float_fallback"] is True


def test_later_rules_win_and_source_names_the_last_rule() -> None:
    config = parse("quantization_param({conv*}, precision_mode=a16_w16)\n"
                   "quantization_param({conv2}, bias_mode=double_scale_initialization)\n"
                   "quantization_param([conv2, conv3], precision_mode=a8_w4)\n")
    conv1 = config.layer("conv1", "relu")
    assert (str(conv1.precision), conv1.source) == ("a16_w16", "script.alls:1")
    conv2 = config.layer("conv2", "relu")
    assert str(conv2.precision) == "a8_w4"
    assert conv2.bias_mode == "double_scale_initialization"  # kept from line 2
    assert conv2.source == "script.alls:3"
    other = config.layer("relu1", "relu")
    assert other == LayerConfig()
    assert [r.source for r in config.matching_rules("conv2", "relu")] == \
        ["script.alls:1", "script.alls:2", "script.alls:3"]


def test_precision_after_float_requantizes() -> None:
    config = parse("quantization_param({*}, float=enabled)\n"
                   "quantization_param(conv1, precision_mode=a16_w16)\n"
                   "quantization_param(conv2, precision_mode=a16_w16, float=enabled)\n")
    assert not config.layer("conv1", "conv").float_fallback
    assert config.layer("conv2", "conv").float_fallback
    assert config.layer("relu1", "relu").float_fallback


# -- globs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("pattern", "name", "kind", "matches"), [
    ("conv*", "conv12", "relu", True),
    ("conv*", "/blocks/conv", "relu", False),
    ("*conv*", "/blocks/conv", "relu", True),
    ("conv1", "conv12", "relu", False),
    ("CONV1", "conv1", "relu", False),  # case-sensitive
    ("conv[0-9]", "conv7", "relu", True),
    ("conv[0-9]", "conv17", "relu", False),
    ("/blocks/blocks.?/attention/Softmax", "/blocks/blocks.1/attention/Softmax", "x", True),
    # kinds, in nn, ONNX and Hailo spellings
    ("conv", "/patch_embed/Conv", "conv", True),
    ("conv*", "/patch_embed/Conv", "nn.conv", True),
    ("Conv", "anything", "conv", True),
    ("Conv", "anything", "conv_transpose", False),
    ("Conv*", "anything", "conv_transpose", True),
    ("MatMul", "x", "matmul", True),
    ("matmul", "x", "MatMul", True),
    ("Gemm", "x", "gemm", True),
    ("dense", "x", "gemm", True),
    ("dense*", "x", "gemm", True),
    ("ew_add*", "x", "add", True),
    ("softmax", "x", "softmax", True),
    ("Softmax", "x", "nn.softmax", True),
    ("layer_norm", "x", "LayerNormalization", True),
    ("softmax", "x", "matmul", False),
    ("*", "", "", False),  # nothing to match: no name, no kind
])
def test_glob_matching(pattern: str, name: str, kind: str, matches: bool) -> None:
    assert LayerRule((pattern,), {"float_fallback": True}, "t").matches(name, kind) is matches


def test_op_kind_spellings() -> None:
    assert normalize_op_kind("nn.conv") == "conv"
    assert normalize_op_kind("Conv") == "conv"
    assert normalize_op_kind("LayerNormalization") == "layer_norm"
    assert normalize_op_kind("dense") == "gemm"
    assert normalize_op_kind("mystery") == "mystery"


def test_check_globs_warns_about_globs_that_match_nothing() -> None:
    config = parse("quantization_param({conv*, conv9*}, precision_mode=a16_w16)\n"
                   "\n"
                   "quantization_param(Softmax, float=enabled)\n"
                   "quantization_param([fc1], precision_mode=a16_w16)\n")
    with pytest.warns(QuantirWarning) as caught:
        problems = config.check_globs(["conv1", "conv2", "relu1"], ["nn.conv", "relu"])
    assert problems == [
        "script.alls:1: glob 'conv9*' matches no layer; check it against the ONNX node "
        "names and op kinds",
        "script.alls:3: glob 'Softmax' matches no layer; check it against the ONNX node "
        "names and op kinds",
        "script.alls:4: glob 'fc1' matches no layer; check it against the ONNX node names "
        "and op kinds",
    ]
    assert [str(w.message) for w in caught] == problems


def test_check_globs_is_quiet_when_everything_matches() -> None:
    config = parse("quantization_param({conv*}, precision_mode=a16_w16)\n"
                   "quantization_param(Softmax, float=enabled)\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert config.check_globs(["/a/Conv"], ["Conv", "nn.softmax"]) == []


# -- the Python API ------------------------------------------------------------------------


def test_build_from_options() -> None:
    config = QuantConfig.build(
        precision="a16_w16_a8", weights="per_tensor", activations="symmetric",
        bias_mode="int16", method="mse", batch_size=4, calibset_size=32, percentile=99.0,
        equalization=True, bias_correction=True, source="--precision",
        layers={"conv*": "a8_w4", "softmax": "float",
                "/head/Gemm": {"precision": "a16_w16", "bias_mode": "int32"}})
    default = config.default
    assert (str(default.precision), default.weights, default.activations) == \
        ("a16_w16_a8", "per-tensor", "symmetric")
    assert default.bias_mode == "double_scale_initialization"
    assert default.source == "--precision"
    assert config.calibration == CalibrationSettings("mse", 4, 32, 99.0)
    assert config.equalization and config.bias_correction
    conv = config.layer("conv1", "conv")
    assert (str(conv.precision), conv.source) == ("a8_w4", "python: layers['conv*']")
    assert conv.weights == "per-tensor"  # the default's, untouched by the rule
    assert config.layer("s", "softmax").float_fallback
    head = config.layer("/head/Gemm", "gemm")
    assert (str(head.precision), head.bias_mode) == ("a16_w16", "single_scale_decomposition")


def test_build_defaults_and_none_means_unset() -> None:
    config = QuantConfig.build(precision=None, weights=None, method=None)
    assert config == QuantConfig()
    assert config.calibration == CalibrationSettings("minmax", 8, 64, 99.9)
    assert not config.equalization and not config.bias_correction
    assert config.overrides is None


def test_build_options_beat_the_script(tmp_path: Path) -> None:
    script = tmp_path / "s.alls"
    script.write_text("model_optimization_config(calibration, batch_size=2, calibset_size=16)\n"
                      "model_optimization_config(quantization, weights=per_tensor)\n"
                      "quantization_param({conv*}, precision_mode=a16_w16)\n")
    config = QuantConfig.build(precision="a8_w4", batch_size=4, script=script)
    assert config.calibration.batch_size == 4  # the option
    assert config.calibration.calibset_size == 16  # the script
    assert str(config.default.precision) == "a8_w4"
    assert config.default.weights == "per-tensor"
    # the script's per-layer rule still refines the default
    assert str(config.layer("conv1", "conv").precision) == "a16_w16"
    assert config.layer("conv1", "conv").source == f"{script}:3"


def test_build_on_a_base_does_not_change_it() -> None:
    base = QuantConfig.build(layers={"a": "float"})
    derived = QuantConfig.build(precision="a16_w16", layers={"b": "float"}, base=base)
    assert len(base.rules) == 1 and len(derived.rules) == 2
    assert base.default.precision == A8_W8
    extended = base.with_layers({"c": "a8_w4"})
    assert len(base.rules) == 1 and len(extended.rules) == 2


def test_build_loads_overrides(tmp_path: Path) -> None:
    path = tmp_path / "o.json"
    path.write_text(json.dumps({"activation_encodings": {}, "param_encodings": {}}))
    config = QuantConfig.build(overrides=path)
    assert isinstance(config.overrides, EncodingOverrides)
    assert config.overrides.path == str(path)


@pytest.mark.parametrize(("kwargs", "fragment"), [
    ({"precision": "a8_w9"}, "options: precision mode 'a8_w9' is not valid"),
    ({"weights": "rows"}, "weights 'rows' is not valid"),
    ({"activations": "both"}, "activations 'both' is not valid"),
    ({"method": "kl"}, "calibration: method 'kl' is not valid; use one of minmax"),
    ({"batch_size": 0}, "calibration: batch_size must be a positive integer"),
    ({"percentile": 150.0}, "calibration: percentile must be in (0, 100]"),
    ({"layers": {"conv*": "a9_w9"}}, "python: layers['conv*']: precision mode 'a9_w9'"),
    ({"layers": {"conv*": 3}}, "python: layers['conv*']: expected a precision mode"),
    ({"layers": {"conv*": {"colour": 1}}}, "python: layers['conv*']: unknown layer setting"),
])
def test_build_errors(kwargs: dict, fragment: str) -> None:
    with pytest.raises(QuantirError) as caught:
        QuantConfig.build(**kwargs)
    assert fragment in str(caught.value)


# -- model scripts: commands ----------------------------------------------------------------


def test_layer_forms() -> None:
    config = parse("quantization_param({conv*}, float=enabled)\n"
                   "quantization_param({conv1, conv2}, float=enabled)\n"
                   "quantization_param([conv1, conv2], float=enabled)\n"
                   "quantization_param(conv1, float=enabled)\n"
                   "quantization_param({conv_feature_splitter[0-9]*_[2-3]}, float=enabled)\n"
                   "quantization_param(net/conv1, float=enabled)\n")
    assert [rule.patterns for rule in config.rules] == [
        ("conv*",), ("conv1", "conv2"), ("conv1", "conv2"), ("conv1",),
        ("conv_feature_splitter[0-9]*_[2-3]",), ("net/conv1",)]
    assert config.rules[4].matches("conv_feature_splitter12_3", "")


def test_quantization_param_keys() -> None:
    config = parse("quantization_param({a}, precision_mode=a16_w16_a8, "
                   "bias_mode=double_scale_initialization, quantization_groups=1)\n"
                   "quantization_param({b}, bias_mode=int16, weights=per_tensor, "
                   "activations=symmetric)\n"
                   "quantization_param({c}, bias_mode=int32, float=disabled)\n"
                   "quantization_param({d}, quantization_groups=1)\n")
    a, b, c = (dict(rule.settings) for rule in config.rules)
    assert a == {"precision": PrecisionMode(16, 16, 8), "float_fallback": False,
                 "bias_mode": "double_scale_initialization"}
    assert b == {"bias_mode": "double_scale_initialization", "weights": "per-tensor",
                 "activations": "symmetric"}
    assert c == {"bias_mode": "single_scale_decomposition", "float_fallback": False}
    assert len(config.rules) == 3  # quantization_groups=1 alone is Hailo's default


def test_calibration_and_algorithms() -> None:
    config = parse("model_optimization_config(calibration, batch_size=2, calibset_size=128)\n"
                   "model_optimization_config(calibration, method=percentile, percentile=99.99)\n"
                   "pre_quantization_optimization(equalization, policy=enabled)\n"
                   "post_quantization_optimization(bias_correction, policy=enabled)\n")
    assert config.calibration == CalibrationSettings("percentile", 2, 128, 99.99)
    assert config.equalization and config.bias_correction
    config = parse("pre_quantization_optimization(equalization, policy=disabled)\n"
                   "post_quantization_optimization(bias_correction, policy=disabled)\n",
                   base=config)
    assert not config.equalization and not config.bias_correction


def test_quantization_defaults_extension() -> None:
    config = parse("model_optimization_config(quantization, weights=per_tensor, "
                   "activations=symmetric, bias_mode=double_scale_initialization)\n"
                   "quantization_param({conv*}, precision_mode=a16_w16)\n")
    default = config.default
    assert (default.weights, default.activations, default.source) == \
        ("per-tensor", "symmetric", "script.alls:1")
    assert default.bias_mode == "double_scale_initialization"
    assert config.layer("conv1", "conv").weights == "per-tensor"


def test_comments_blank_lines_and_continuations() -> None:
    config = parse("# a comment\n"
                   "\n"
                   "   # an indented comment\n"
                   "quantization_param([conv1,   # trailing comment inside the list\n"
                   "                    conv2],\n"
                   "                   precision_mode=a16_w16)  # after the command\n"
                   "quantization_param({conv3}, float=enabled)\n")
    assert [rule.source for rule in config.rules] == ["script.alls:4", "script.alls:7"]
    assert config.rules[0].patterns == ("conv1", "conv2")


def test_base_is_not_modified() -> None:
    base = parse("quantization_param({a}, float=enabled)\n")
    derived = parse("quantization_param({b}, float=enabled)\n"
                    "model_optimization_config(calibration, batch_size=1)\n", base=base)
    assert [r.patterns for r in base.rules] == [("a",)]
    assert [r.patterns for r in derived.rules] == [("a",), ("b",)]
    assert base.calibration.batch_size == 8 and derived.calibration.batch_size == 1


@pytest.mark.parametrize("line", [
    "resources_param(strategy=greedy, max_compute_utilization=0.8)",
    "allocator_param(automatic_reshapes=disabled)",
    "performance_param(compiler_optimization_level=max)",
    "context_switch_param(mode=enabled)",
    "compilation_param({conv*}, resources_shares=0.5)",
    "platform_param(hef_version=5)",
    "context0 = context([input_layer1, conv1])",
    "conv9_d0, conv9_d1, conv9_dc = defuse(conv9, 2)",
    "shortcut1 = shortcut(conv1, conv2)",
    'buffers(conv1, conv2, 2)',
])
def test_allocation_commands_are_ignored_with_a_warning(line: str) -> None:
    command = line.split("(")[0].split("=")[-1].strip()
    with pytest.warns(QuantirWarning, match=rf"^script.alls:2: '{command}' is a Hailo "
                                            rf"hardware-allocation command"):
        config = parse_model_script(f"# x\n{line}\n", "script.alls")
    assert config == QuantConfig()


@pytest.mark.parametrize(("line", "fragment"), [
    ("model_optimization_flavor(optimization_level=2)", "optimization_level is ignored"),
    ("model_optimization_flavor(batch_size=4)", "batch_size is ignored"),
    ("model_optimization_config(globals, multiproc_policy=disabled)",
     "model_optimization_config(globals) tunes Hailo's optimizer"),
    ("model_optimization_config(negative_exponent, layers={*}, rank=0)", "negative_exponent"),
    ("pre_quantization_optimization(ew_add_fusing, policy=disabled)",
     "pre_quantization_optimization(ew_add_fusing) is not a quantir algorithm, so "
     "policy=disabled changes nothing"),
    ("pre_quantization_optimization(matmul_equalization, layers={matmul*}, policy=disabled)",
     "matmul_equalization"),
    ("post_quantization_optimization(finetune, policy=disabled)", "finetune"),
])
def test_harmless_hailo_settings_are_ignored_with_a_warning(line: str, fragment: str) -> None:
    with pytest.warns(QuantirWarning) as caught:
        config = parse_model_script(line + "\n", "script.alls")
    assert config == QuantConfig()
    assert str(caught[0].message).startswith("script.alls:1: ")
    assert fragment in str(caught[0].message)


def test_compression_level_zero_is_accepted_silently() -> None:
    assert parse("model_optimization_flavor(compression_level=0)\n") == QuantConfig()


# -- model scripts: errors ------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    # numerics-changing Hailo commands
    ("normalization1 = normalization([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])",
     "script.alls:1: 'normalization' adds (x - mean) / std at the model input; put the "
     "normalization in the ONNX model or in the calibration data, and remove the line"),
    ("change_output_activation(conv74, sigmoid)", "'change_output_activation' changes the"),
    ('nms_postprocess("../nms_config.json", meta_arch=yolov8, engine=cpu)',
     "'nms_postprocess' adds Hailo's NMS post-processing"),
    ("yuv_to_rgb1 = input_conversion(yuv_to_rgb)", "'input_conversion' adds a color"),
    ("resize_input1 = resize(resize_shapes=[480, 640])", "'resize' adds an input resize"),
    ("remove_node(format_conversion1)", "'remove_node' removes a layer"),
    ("model_optimization_flavor(optimization_level=2, compression_level=1)",
     "compression_level=1 lets Hailo pick 4-bit layers; quantir does not - set "
     "precision_mode=a8_w4"),
    ("model_optimization_config(compression_params, auto_4bit_weights_ratio=0.2)",
     "model_optimization_config(compression_params) lets Hailo pick 4-bit layers"),
    ("post_quantization_optimization(finetune, policy=enabled, batch_size=4)",
     "post_quantization_optimization(finetune) is not implemented in quantir (only "
     "bias_correction); remove the line or set policy=disabled"),
    ("pre_quantization_optimization(activation_clipping, layers=[conv9], mode=percentile, "
     "clipping_values=[0.01, 99.7])",
     "pre_quantization_optimization(activation_clipping) is not implemented in quantir (only "
     "equalization)"),
    # unknown commands, keys and values
    ("quantise_param({conv*}, precision_mode=a16_w16)",
     "unknown command 'quantise_param'; quantir understands quantization_param"),
    ("quantization_param({conv*}, force_range_out=[0, 1])",
     "quantization_param: 'force_range_out' is not supported; fix the range with an "
     "encodings overrides file (--overrides) (known keys: precision_mode, bias_mode"),
    ("quantization_param({conv*}, colour=red)",
     "quantization_param: 'colour' is not supported; remove it (known keys: precision_mode"),
    ("quantization_param({conv*}, precision_mode=a16_w12)",
     "precision mode 'a16_w12' is not valid: write a<bits>_w<bits>"),
    ("quantization_param({conv*}, precision_mode={a16_w16})",
     "quantization_param: 'precision_mode' takes a single word, not a {glob} list"),
    ("quantization_param({conv*}, bias_mode=double)",
     "quantization_param: bias_mode=double is not valid; use single_scale_decomposition or "
     "double_scale_initialization or int32 or int16"),
    ("quantization_param({conv*}, float=yes)", "float=yes is not valid; use enabled or disabled"),
    ("quantization_param({conv*}, weights=per_row)", "weights=per_row is not valid"),
    ("quantization_param({conv*}, quantization_groups=4)",
     "quantization_groups=4 is not supported (quantir has no per-group scales"),
    ("quantization_param({conv*}, quantization_groups=two)",
     "quantization_groups=two is not valid; use an integer >= 1"),
    ("quantization_param({conv*})", "quantization_param sets nothing; add e.g. "
                                    "precision_mode=a16_w16"),
    ("quantization_param(precision_mode=a16_w16)",
     "quantization_param takes the layers first and then key=value settings, got 0"),
    ("quantization_param(conv1, conv2, precision_mode=a16_w16)", "got 2 positional arguments"),
    ("quantization_param(\"conv1\", precision_mode=a16_w16)",
     "quantization_param: the layers must be {glob}, [name, name] or a name, not the string"),
    ("quantization_param({conv*}, precision_mode=a16_w16, precision_mode=a8_w8)",
     "'precision_mode' is given twice; keep one"),
    ("quantization_param({conv*}, precision_mode=a16_w16, conv2)",
     "positional argument 'conv2' after a key=value argument; put it first"),
    ("quantization_param({conv*} precision_mode=a16_w16)",
     "expected ',' or ')' but found 'precision_mode' in quantization_param(...)"),
    ("quantization_param({}, precision_mode=a16_w16)", "empty glob in {}"),
    ("quantization_param({a,,b}, precision_mode=a16_w16)", "empty glob in {a,,b}"),
    ("x = quantization_param({conv*}, precision_mode=a16_w16)",
     "'quantization_param' returns nothing to assign; remove 'x ='"),
    ("model_optimization_config(calibration, batch_size=0)",
     "batch_size=0 is not valid; use an integer >= 1"),
    ("model_optimization_config(calibration, calibset_size=6.5)", "calibset_size=6.5"),
    ("model_optimization_config(calibration, method=kl)",
     "method=kl is not valid; use minmax or moving_average or mse or entropy or percentile"),
    ("model_optimization_config(calibration, percentile=101)",
     "percentile=101 is not valid; use a number in (0, 100]"),
    ("model_optimization_config(calibration, batchsize=8)",
     "model_optimization_config(calibration): unknown key 'batchsize'; use batch_size, "
     "calibset_size, method, percentile"),
    ("model_optimization_config(calibrate, batch_size=8)",
     "model_optimization_config: unknown section 'calibrate'; use calibration or quantization"),
    ("model_optimization_config(batch_size=8)",
     "model_optimization_config needs a section name first, e.g. "
     "model_optimization_config(calibration, ...)"),
    ("model_optimization_config(quantization, weights=per_row)", "weights=per_row is not valid"),
    ("model_optimization_config(quantization, precision_mode=a16_w16)",
     "model_optimization_config(quantization): unknown key 'precision_mode'"),
    ("model_optimization_config(quantization)", "model_optimization_config(quantization) sets "
                                                "nothing"),
    ("pre_quantization_optimization(equalization)",
     "pre_quantization_optimization(equalization): policy is missing; write "
     "pre_quantization_optimization(equalization, policy=enabled)"),
    ("pre_quantization_optimization(equalization, policy=enabled, layers={conv*})",
     "pre_quantization_optimization(equalization): 'layers' is not supported"),
    ("post_quantization_optimization(bias_correction, policy=on)",
     "policy=on is not valid; use enabled or disabled"),
    ("model_optimization_flavor(optimization_level=fast)",
     "optimization_level=fast is not valid"),
    ("model_optimization_flavor(speed=2)",
     "model_optimization_flavor: unknown key 'speed'; use optimization_level"),
    ("model_optimization_flavor(2)", "model_optimization_flavor takes only key=value"),
])
def test_command_errors(text: str, expected: str) -> None:
    message = parse_error("# first line\n" + text + "\n")
    assert message.startswith("script.alls:2: "), message
    assert expected.removeprefix("script.alls:1: ") in message, message


@pytest.mark.parametrize(("text", "expected"), [
    ("quantization_param({conv*}, precision_mode=a16_w16\n",
     "script.alls:1: '(' is never closed; add the missing ')'"),
    ("\nquantization_param([conv1, conv2, precision_mode=a16_w16)\n",
     "script.alls:2: ')' does not match the '[' opened on line 2; close it with ']'"),
    ("quantization_param(conv1, precision_mode=a16_w16))\n",
     "script.alls:1: ')' closes nothing; remove it or add the missing '('"),
    ("\n\nquantization_param({conv*, precision_mode=a16_w16)\n",
     "script.alls:3: '{' is never closed; close the glob list with '}'"),
    ("quantization_param(conv*}, precision_mode=a16_w16)\n",
     "script.alls:1: '}' closes nothing"),
    ('nms_postprocess("config.json, engine=cpu)\n',
     'script.alls:1: unterminated string; close it with "'),
    ("quantization_param\n", "script.alls:1: 'quantization_param' must be followed by '('"),
    ("quantization_param {conv*}\n", "script.alls:1: 'quantization_param' must be followed"),
    ("quantization_param(conv1, precision_mode=a16_w16) extra\n",
     "script.alls:1: unexpected 'extra' after quantization_param(...); put one command per line"),
    ("(conv1)\n", "script.alls:1: expected a command name, found '('"),
    ("x =\n", "script.alls:1: nothing after '='"),
    ("x y = normalization([1], [2])\n", "script.alls:1: unexpected 'y' before '='"),
    ("quantization_param(conv1, precision_mode=)\n",
     "script.alls:1: expected a value for 'precision_mode', found ')'"),
    ("quantization_param([conv1 conv2], precision_mode=a16_w16)\n",
     "script.alls:1: expected ',' or ']' but found 'conv2' in a [...] list"),
])
def test_syntax_errors(text: str, expected: str) -> None:
    assert parse_error(text).startswith(expected), parse_error(text)


def test_continuation_error_names_the_first_line() -> None:
    message = parse_error("quantization_param([conv1,\n"
                          "                    conv2],\n"
                          "                   precision_mode=a16_w99)\n")
    assert message.startswith("script.alls:1: precision mode 'a16_w99' is not valid")


def test_unreadable_script(tmp_path: Path) -> None:
    with pytest.raises(QuantirError, match=r"missing.alls: cannot read the model script"):
        load_model_script(tmp_path / "missing.alls")
    binary = tmp_path / "binary.alls"
    binary.write_bytes(b"\xff\xfe\x00quantization_param")
    with pytest.raises(QuantirError, match=r"binary.alls: the model script is not UTF-8"):
        load_model_script(binary)


# -- example scripts -------------------------------------------------------------------------


def onnx_nodes(path: Path) -> tuple[list[str], list[str]]:
    nodes = [n for n in onnx.load(str(path)).graph.node if n.op_type != "Constant"]
    return [n.name for n in nodes], [n.op_type for n in nodes]


def test_vit_a16_example_reproduces_the_forum_case() -> None:
    path = CONFIGS / "vit_a16.alls"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = load_model_script(path)
        names, kinds = onnx_nodes(DATA / "tiny_vit.onnx")
        assert config.check_globs(names, kinds) == []
    assert (config.calibration.batch_size, config.calibration.calibset_size) == (1, 64)

    def precision(name: str, kind: str) -> str:
        return str(config.layer(name, kind).precision)

    assert precision("/patch_embed/Conv", "conv") == "a16_w16"
    assert precision("/blocks/blocks.0/attention/q/MatMul", "matmul") == "a16_w16"
    assert precision("/blocks/blocks.0/attention/MatMul", "matmul") == "a16_w16"
    assert precision("/head/Gemm", "gemm") == "a16_w16"
    assert precision("/blocks/blocks.0/attention/Softmax", "softmax") == "a8_w8"
    assert config.layer("/blocks/blocks.0/attention/Softmax", "softmax").source == \
        f"{path}:11"
    assert precision("/norm/LayerNormalization", "layer_norm") == "a8_w8"


def test_digits_mixed_example() -> None:
    path = CONFIGS / "digits_mixed.alls"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = load_model_script(path)
        assert config.check_globs(*onnx_nodes(DATA / "digits_cnn.onnx")) == []
    assert config.calibration == CalibrationSettings("percentile", 8, 64, 99.99)
    assert config.equalization and config.bias_correction
    assert config.default.source == f"{path}:4"
    stem = config.layer("/features/features.0/Conv", "conv")
    assert (str(stem.precision), stem.bias_mode, stem.source) == \
        ("a16_w16", "double_scale_initialization", f"{path}:9")
    assert str(config.layer("/features/features.6/Conv", "conv").precision) == "a8_w4"
    assert str(config.layer("/features/features.9/Conv", "conv").precision) == "a8_w8"
    assert config.layer("/classifier/Gemm", "gemm").float_fallback


def test_hailo_zoo_style_example() -> None:
    path = CONFIGS / "hailo_zoo_style.alls"
    with pytest.warns(QuantirWarning) as caught:
        config = load_model_script(path)
    lines = sorted(int(str(w.message).split(":")[1]) for w in caught)
    assert lines == [3, 5, 6, 7, 13, 14, 15, 16]
    assert config.calibration.batch_size == 4
    assert [rule.source for rule in config.rules] == [
        f"{path}:8", f"{path}:9", f"{path}:11", f"{path}:12"]
    conv2 = config.layer("conv2", "")
    assert (str(conv2.precision), conv2.bias_mode) == ("a16_w16", "double_scale_initialization")
    assert str(config.layer("conv_feature_splitter3_2", "").precision) == "a8_w4"
