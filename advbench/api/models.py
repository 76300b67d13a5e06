"""The model an attack or evaluation runs on: a run's checkpoint, or a ``--model-module`` the user named.

``--model-module`` code is imported only from a spec the user typed, never from a file advbench reads."""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path
from typing import Any

from torch import nn

from advbench import runs
from advbench.config import TrainConfig, config_to_dict
from advbench.engine.setup import load_run_model
from advbench.errors import UserError

#: a dotted Python name: a module path (``pkg.module``) or an attribute path (``factory``, ``Zoo.make``)
_DOTTED_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _import_model_source(spec: str) -> tuple[Any, str]:
    """The module named by ``spec``'s part before the last ``:`` and the attribute path after it.

    ``pkg.module:factory`` imports an importable module (``sys.path`` as it is: the working directory is
    not added); ``path/to/file.py:factory`` loads exactly that file. Either way the code is the user's own
    choice on the command line: advbench never imports a module named by a file it reads.
    """
    mod_name, sep, attr = spec.rpartition(":")
    if not sep or not mod_name or not _DOTTED_NAME.match(attr):
        raise UserError(f"--model-module {spec!r} must be pkg.module:factory or path/to/file.py:factory "
                        "(e.g. mymodels.nets:make_model)")
    if mod_name.endswith(".py"):
        path = Path(mod_name)
        if not path.is_file():
            raise UserError(f"--model-module {spec}: no such file {path}")
        name = "advbench_user_model_" + re.sub(r"\W", "_", path.stem)
        loader_spec = importlib.util.spec_from_file_location(name, path)
        if loader_spec is None or loader_spec.loader is None:
            raise UserError(f"--model-module {spec}: {path} is not a Python module")
        module = importlib.util.module_from_spec(loader_spec)
        try:
            loader_spec.loader.exec_module(module)
        except Exception as err:  # noqa: BLE001 - the user's file failed; say so in one line
            raise UserError(f"--model-module {spec}: running {path} raised {type(err).__name__}: {err}") from None
        return module, attr
    if not _DOTTED_NAME.match(mod_name):
        raise UserError(f"--model-module {spec!r}: '{mod_name}' is not a module name; use pkg.module:factory or "
                        "path/to/file.py:factory")
    try:
        return importlib.import_module(mod_name), attr
    except ImportError as err:
        raise UserError(f"cannot import '{mod_name}' for --model-module: {err} (a module in the working directory: "
                        f"give its file, {mod_name.replace('.', '/')}.py:{attr}, or set PYTHONPATH)") from None
    except Exception as err:  # noqa: BLE001 - importing the user's module failed
        raise UserError(f"--model-module {spec}: importing '{mod_name}' raised {type(err).__name__}: {err}") from None


def load_model_module(spec: str, checkpoint: str | Path | None = None, device: Any = "cpu") -> Any:
    """Build a model from ``pkg.module:factory`` or ``path/to/file.py:factory`` (a callable returning an
    ``nn.Module``, or a module object) and load a state dict from ``checkpoint`` (its ``model`` or
    ``state_dict`` entry, or the dict itself).

    This imports and runs that code: call it only with a spec the user typed (never one read from a file).
    """
    module, attr = _import_model_source(str(spec))
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise UserError(f"'{module.__name__}' has no attribute '{attr}' (--model-module {spec})")
        obj = getattr(obj, part)
    if not isinstance(obj, nn.Module):
        if not callable(obj):
            raise UserError(f"--model-module {spec} is neither a model nor a callable returning one")
        try:
            obj = obj()
        except Exception as err:  # noqa: BLE001 - the user's factory failed; say so in one line
            first = (str(err).splitlines() or [""])[0]
            raise UserError(f"--model-module {spec}: the factory raised {type(err).__name__}: {first} (it must "
                            "take no arguments and return an nn.Module)") from None
        if not isinstance(obj, nn.Module):
            raise UserError(f"--model-module {spec} returned {type(obj).__name__}, not a torch.nn.Module")
    if checkpoint is not None:
        ckpt = runs.load_checkpoint(checkpoint, map_location="cpu")
        state = ckpt
        if isinstance(ckpt, dict):
            state = ckpt.get("model", ckpt.get("state_dict", ckpt))
        try:
            obj.load_state_dict(state)
        except (RuntimeError, TypeError, AttributeError, ValueError) as err:
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            raise UserError(f"--checkpoint {checkpoint}: weights do not fit the model ({first})") from None
    return obj.to(device).eval()


def external_record(name: str, dataset: str, eps: str, norm: str, seed: int, spec: str | None,
                     checkpoint: str | None) -> dict[str, Any]:
    """config.json for a directory of results on a model advbench did not train (so reports can read it)."""

    cfg = TrainConfig(dataset=dataset, model=name, defense=f"external:{name}", eps=eps, norm=norm, seed=seed)  # type: ignore[arg-type]
    return {"kind": "external", "config": config_to_dict(cfg), "model_module": spec, "checkpoint": checkpoint,
            "versions": runs.package_versions()}


def load_source(source: Any, dev: Any) -> tuple[Any, dict[str, Any] | None]:
    """The transfer source: a run directory (its best checkpoint) or a model object."""

    if source is None:
        return None, None
    if isinstance(source, nn.Module):
        return source.to(dev).eval(), {"model": type(source).__name__}
    src = runs.resolve_run(source)
    model, _record = load_any_run_model(src, "best", dev)
    ckpt = src / "checkpoints" / "best.pt"
    epoch = runs.load_checkpoint(ckpt).get("epoch") if ckpt.is_file() else None
    return model, {"run": str(src), "checkpoint": "best", "epoch": epoch}


def load_any_run_model(run_dir: Path, checkpoint: str, dev: Any) -> tuple[Any, dict[str, Any]]:
    """A trained run's model; a directory of results on an external model is refused with the command that
    attacks it (the code that built that model is never run because a results folder names it)."""
    record = runs.read_json(run_dir / "config.json")
    if record.get("kind") == "external":
        # the folder names the code that built its model; running it would let whoever hands over a results
        # folder run code here, so the user must name that code on the command line themselves
        spec = record.get("model_module")
        if not spec or not isinstance(spec, str):
            raise UserError(f"{run_dir} holds results of a Python-API model; attack it with advbench.evaluate(model)")
        raise UserError(f"{run_dir} holds results of an external model; advbench does not run code named in a "
                        f"results folder: if you trust it, type 'advbench attack --model-module {spec} "
                        f"--out {run_dir} --dataset DATASET' yourself")
    return load_run_model(run_dir, checkpoint, dev)


def check_logits(model: Any, data: Any, spec: str) -> None:
    """One forward on two images: the model must return logits [N, classes] with more classes than the largest
    label (a model that returns images, a scalar or too few classes fails here in one line, not deep inside)."""
    import torch

    x, y = (data[0], data[1]) if isinstance(data, (tuple, list)) else (data.x, data.y)
    x = torch.as_tensor(x[:2])
    x = x.float().div(255) if x.dtype == torch.uint8 else x  # as the evaluation feeds it: floats as given
    try:
        with torch.no_grad():
            out = model(x.to(next(iter(model.parameters()), x).device))
    except Exception as err:  # noqa: BLE001 - the user's model failed on the data: say so in one line
        first = (str(err).splitlines() or [""])[0][:200]
        raise UserError(f"{spec}: the model fails on the dataset's images {tuple(x.shape[1:])} "
                        f"({type(err).__name__}: {first})") from None
    n_classes = int(torch.as_tensor(y).max()) + 1 if len(y) else 1
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[0] != x.shape[0] or out.shape[1] < n_classes:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"{spec}: the model returns {shape} for {x.shape[0]} images; it must return logits "
                        f"[N, classes] with at least {n_classes} classes")
