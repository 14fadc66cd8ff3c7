"""Where the reward's network passes run: PyTorch, ONNX Runtime or TensorRT.

A backend has encode_condition(cond_tokens) -> cache and denoise(x_t, t, cache) ->
log p(x0), torch tensors in and out (models.diffusion.DenoiseBackend). The sampling
loop, and with it every random number, stays in torch (models.diffusion), so all
backends see the same noise and differ only by their arithmetic:

    model.entropy_reward(cond_tokens, backend=make_backend("onnxruntime", onnx_dir=d))

The ONNX graphs come from models.export.export_denoiser.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from models.denoiser import ConditionCache
from models.diffusion import VideoDiffusion, eval_mode
from models.export import CONDITION_FILE, STEP_FILE, model_hash

BACKENDS = ("onnxruntime", "tensorrt", "torch")


@dataclass
class StackedCondition:
    """The condition.onnx outputs: keys, values (N, layers, heads, k*L, head_dim)."""

    keys: Tensor
    values: Tensor

    def repeat_interleave(self, repeats: int) -> StackedCondition:
        if repeats == 1:
            return self
        return StackedCondition(self.keys.repeat_interleave(repeats, dim=0),
                                self.values.repeat_interleave(repeats, dim=0))


class TorchBackend:
    """The PyTorch model itself (eval mode, no gradient): the reference."""

    def __init__(self, model: VideoDiffusion) -> None:
        self.model = model

    @torch.no_grad()
    def encode_condition(self, cond_tokens: Tensor) -> ConditionCache:
        with eval_mode(self.model):
            return self.model.encode_condition(cond_tokens)

    @torch.no_grad()
    def denoise(self, x_t: Tensor, t: Tensor, cache: ConditionCache) -> Tensor:
        with eval_mode(self.model):
            return self.model.denoise(x_t, t, cache)


def _ort_session(path: str | Path, providers: list[str] | None, threads: int | None) -> Any:
    import onnxruntime as ort

    if providers is None:
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=providers)


def _numpy(x: Tensor) -> np.ndarray:
    return x.detach().cpu().contiguous().numpy()


class OnnxRuntimeBackend:
    """condition.onnx + denoiser_step.onnx in ONNX Runtime.

    providers: default CUDA if this onnxruntime has it, else CPU. threads: ORT's
    intra-op threads (default: ORT's choice; 1 on machines shared with other jobs).
    Tensors go through host memory on every pass: with CUDA, IO binding would avoid it.
    """

    def __init__(self, condition_onnx: str | Path, step_onnx: str | Path,
                 providers: list[str] | None = None, threads: int | None = None) -> None:
        self.condition = _ort_session(condition_onnx, providers, threads)
        self.step = _ort_session(step_onnx, providers, threads)

    def encode_condition(self, cond_tokens: Tensor) -> StackedCondition:
        keys, values = self.condition.run(["keys", "values"], {"cond_tokens": _numpy(cond_tokens.long())})
        return StackedCondition(torch.from_numpy(keys), torch.from_numpy(values))

    def denoise(self, x_t: Tensor, t: Tensor, cache: StackedCondition) -> Tensor:
        (log_x0,) = self.step.run(["log_x0"], {"x_t": _numpy(x_t.long()), "t": _numpy(t.long()),
                                               "keys": _numpy(cache.keys), "values": _numpy(cache.values)})
        return torch.from_numpy(log_x0).to(x_t.device)


class OnnxRuntimeCodec:
    """The exported codec encoder: images (N, 3, S, S) in [-1, 1] -> tokens (N, g, g) int64."""

    def __init__(self, codec_onnx: str | Path, providers: list[str] | None = None,
                 threads: int | None = None) -> None:
        self.session = _ort_session(codec_onnx, providers, threads)

    def encode(self, images: Tensor) -> Tensor:
        (tokens,) = self.session.run(["tokens"], {"images": _numpy(images.float())})
        return torch.from_numpy(tokens).to(images.device)


# ------------------------------------------------------------------------- TensorRT

def _import_tensorrt() -> Any:
    try:
        import tensorrt
    except ImportError as exc:
        raise RuntimeError(
            "TensorRT is not installed (pip install tensorrt on a machine with an NVIDIA GPU and "
            "driver); use the 'onnxruntime' or 'torch' backend here") from exc
    return tensorrt


def _engine_key(trt: Any, onnx_path: Path, fp16: bool, max_batch: int) -> str:
    """GPU name + compute capability + TensorRT version + ONNX hash (+ the build options
    that change the engine): an engine only runs where and as it was built."""
    props = torch.cuda.get_device_properties(torch.cuda.current_device())
    gpu = re.sub(r"[^A-Za-z0-9]+", "-", props.name).strip("-")
    precision = "fp16" if fp16 else "fp32"
    return (f"{onnx_path.stem}-{gpu}-sm{props.major}{props.minor}-trt{trt.__version__}"
            f"-{model_hash(onnx_path)[:16]}-{precision}-b{max_batch}.engine")


class _TensorRTEngine:
    """One ONNX graph as a TensorRT engine, built once and cached on disk."""

    def __init__(self, trt: Any, onnx_path: Path, cache_dir: Path, fp16: bool,
                 opt_batch: int, max_batch: int) -> None:
        logger = trt.Logger(trt.Logger.WARNING)
        engine_path = cache_dir / _engine_key(trt, onnx_path, fp16, max_batch)
        if not engine_path.exists():
            data = self._build(trt, logger, onnx_path, fp16, min(opt_batch, max_batch), max_batch)
            cache_dir.mkdir(parents=True, exist_ok=True)
            partial = engine_path.with_suffix(f".{os.getpid()}.partial")
            partial.write_bytes(data)
            partial.replace(engine_path)  # atomic: a crashed build leaves no bad engine
        self.runtime = trt.Runtime(logger)  # must outlive the engine
        self.engine = self.runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not load the engine {engine_path}; delete it to rebuild")
        self.context = self.engine.create_execution_context()
        to_torch = {trt.DataType.FLOAT: torch.float32, trt.DataType.HALF: torch.float16,
                    trt.DataType.INT32: torch.int32, trt.DataType.INT64: torch.int64,
                    trt.DataType.BOOL: torch.bool}
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.dtypes = {name: to_torch[self.engine.get_tensor_dtype(name)] for name in names}
        self.outputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]

    @staticmethod
    def _build(trt: Any, logger: Any, onnx_path: Path, fp16: bool, opt_batch: int, max_batch: int) -> bytes:
        builder = trt.Builder(logger)
        network = builder.create_network(0)  # TensorRT 10: explicit batch is the only mode
        parser = trt.OnnxParser(network, logger)
        if not parser.parse(onnx_path.read_bytes()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
        config = builder.create_builder_config()
        if fp16:
            config.set_flag(trt.BuilderFlag.FP16)
        profile = builder.create_optimization_profile()
        for i in range(network.num_inputs):
            tensor = network.get_input(i)
            rest = tuple(tensor.shape)[1:]  # only the batch axis is dynamic in our graphs
            profile.set_shape(tensor.name, (1, *rest), (opt_batch, *rest), (max_batch, *rest))
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
        return bytes(serialized)

    def __call__(self, **inputs: Tensor) -> dict[str, Tensor]:
        device = torch.device("cuda", torch.cuda.current_device())
        bound = {}
        for name, tensor in inputs.items():
            bound[name] = tensor.to(device, self.dtypes[name]).contiguous()  # kept alive until return
            self.context.set_input_shape(name, tuple(bound[name].shape))
            self.context.set_tensor_address(name, bound[name].data_ptr())
        outputs = {}
        for name in self.outputs:
            outputs[name] = torch.empty(tuple(self.context.get_tensor_shape(name)),
                                        dtype=self.dtypes[name], device=device)
            self.context.set_tensor_address(name, outputs[name].data_ptr())
        # Torch's current stream: later torch ops on these tensors are ordered after the engine.
        if not self.context.execute_async_v3(torch.cuda.current_stream().cuda_stream):
            raise RuntimeError("TensorRT execution failed")
        return outputs


class TensorRTBackend:
    """condition.onnx + denoiser_step.onnx as TensorRT engines on the current CUDA GPU.

    Written against the TensorRT 10 Python API (Builder, OnnxParser, one optimisation
    profile over the batch axis, execute_async_v3 with torch CUDA tensors as the
    bindings). NOT EXECUTED in this repository's tests: TensorRT cannot be installed
    on the CPU development machines, where the constructor raises a clear RuntimeError.
    Validate against OnnxRuntimeBackend / TorchBackend rewards on a GPU before use.

    Engines are cached in cache_dir under GPU name + compute capability + TensorRT
    version + ONNX sha256 (+ precision and max batch); the first run builds them
    (minutes). fp16: allow half-precision kernels (inputs and outputs stay as in the
    ONNX). Batches above max_batch (frames x samples per frame) are refused by TensorRT.
    """

    def __init__(self, condition_onnx: str | Path, step_onnx: str | Path,
                 cache_dir: str | Path = "~/.cache/drr/tensorrt", fp16: bool = False,
                 opt_batch: int = 64, max_batch: int = 512) -> None:
        trt = _import_tensorrt()
        if not torch.cuda.is_available():
            raise RuntimeError("the TensorRT backend needs a CUDA GPU; torch sees none")
        cache = Path(cache_dir).expanduser()
        self.condition = _TensorRTEngine(trt, Path(condition_onnx), cache, fp16, opt_batch, max_batch)
        self.step = _TensorRTEngine(trt, Path(step_onnx), cache, fp16, opt_batch, max_batch)

    def encode_condition(self, cond_tokens: Tensor) -> StackedCondition:
        out = self.condition(cond_tokens=cond_tokens)
        return StackedCondition(out["keys"], out["values"])

    def denoise(self, x_t: Tensor, t: Tensor, cache: StackedCondition) -> Tensor:
        out = self.step(x_t=x_t, t=t, keys=cache.keys, values=cache.values)
        return out["log_x0"].float().to(x_t.device)


# -------------------------------------------------------------------------- factory

def make_backend(name: str, model: VideoDiffusion | None = None, onnx_dir: str | Path | None = None,
                 **options: Any) -> TorchBackend | OnnxRuntimeBackend | TensorRTBackend:
    """"torch" needs model; "onnxruntime" and "tensorrt" need onnx_dir (holding
    export_denoiser's condition.onnx and denoiser_step.onnx); options go to the class."""
    if name not in BACKENDS:
        raise ValueError(f"unknown reward backend {name!r}; known: {list(BACKENDS)}")
    if name == "torch":
        if model is None:
            raise ValueError("the 'torch' backend needs model=VideoDiffusion")
        return TorchBackend(model, **options)
    if onnx_dir is None:
        raise ValueError(f"the {name!r} backend needs onnx_dir= (from models.export.export_denoiser)")
    condition, step = Path(onnx_dir) / CONDITION_FILE, Path(onnx_dir) / STEP_FILE
    for path in (condition, step):
        if not path.is_file():
            raise FileNotFoundError(f"{path} not found: export it with models.export.export_denoiser")
    cls = OnnxRuntimeBackend if name == "onnxruntime" else TensorRTBackend
    return cls(condition, step, **options)
