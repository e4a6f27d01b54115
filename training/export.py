"""Export a torch policy to ONNX with the full model contract, checked against torch before it is written.

The module must map a float32 batch [B, history * n_inputs] of scaled inputs to the scaled action
[B, n_actions], or to (action, spread) when the contract declares a spread output. The exported
graph is run in ONNX Runtime with the edge's own session settings on a check batch; if any output
differs from torch by more than `atol`, nothing is written.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import subprocess
import sys
import warnings
from contextlib import redirect_stdout
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from boiler_ai.control.model_contract import (
    ModelContract,
    read_contract,
    write_contract,
)
from boiler_ai.control.policy import session_options


class ExportError(RuntimeError):
    """The exported graph is not the torch model (or not a valid graph): nothing was written."""


def export_policy(module: torch.nn.Module, contract: ModelContract, path: str | Path, check_batch: np.ndarray,
                  *, atol: float = 1e-4) -> str:
    """Write `module` to `path` as ONNX carrying `contract`; return the file's sha256."""
    path = Path(path)
    module = module.eval()
    check = torch.as_tensor(np.asarray(check_batch, dtype=np.float32))
    if check.ndim != 2 or check.shape[1] != contract.input_width or check.shape[0] < 2:
        raise ExportError(f"check batch must be [B >= 2, {contract.input_width}], got {list(check.shape)}")
    output_names = [contract.action_output] + ([contract.spread_output] if contract.spread_output else [])

    # The exporter narrates to stdout and warns about optional packages (torchvision): keep the log to
    # what matters here, the check below.
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                module, (check[:2],), dynamo=True, external_data=False, verbose=False,
                input_names=[contract.input_name], output_names=output_names,
                # an example batch of 2, because a size-1 dimension would be specialised to 1
                dynamic_shapes=({0: torch.export.Dim("batch")},),
            )
    finally:
        exporter_log.setLevel(level)
    proto = program.model_proto
    write_contract(proto, contract)
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()

    with torch.no_grad():
        expected = module(check)
    expected = [expected] if isinstance(expected, torch.Tensor) else list(expected)
    if len(expected) != len(output_names):
        raise ExportError(f"module returns {len(expected)} outputs, the contract declares {output_names}")
    session = ort.InferenceSession(data, sess_options=session_options(), providers=["CPUExecutionProvider"])
    got = session.run(output_names, {contract.input_name: check.numpy()})
    for name, want, have in zip(output_names, expected, got):
        diff = float(np.max(np.abs(want.numpy() - have))) if have.shape == tuple(want.shape) else np.inf
        if not diff <= atol:
            raise ExportError(f"ONNX output {name!r} differs from torch by {diff:.3g} > {atol} on the check batch")

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    if read_contract(path).to_metadata() != contract.to_metadata():  # the file on disk says what we meant
        raise ExportError(f"{path}: contract read back differs from the one written")
    return hashlib.sha256(data).hexdigest()


def created_utc() -> str:
    """Now, or SOURCE_DATE_EPOCH when set, so a rebuild with the same seed can give the same file."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    when = datetime.fromtimestamp(int(epoch), UTC) if epoch else datetime.now(UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def code_commit() -> str:
    """The git commit of the training code, with '-dirty' if a tracked file this run depends on is modified:
    training/, the tag maps in opc/, and every boiler_ai module loaded in this process (call it after
    the data was built, so the simulator's modules count and a colleague's unrelated edit does not)."""
    root = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        loaded = {Path(m.__file__).resolve() for name, m in list(sys.modules.items())
                  if name.partition(".")[0] == "boiler_ai" and getattr(m, "__file__", None)}
        used = ["training", "opc", *sorted(str(p.relative_to(root)) for p in loaded if p.is_relative_to(root))]
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", *used)
    except (OSError, subprocess.CalledProcessError) as exc:
        raise ExportError(f"cannot read the git commit of the training code ({exc}); "
                          "train from a git checkout") from None
    return commit + ("-dirty" if dirty else "")
