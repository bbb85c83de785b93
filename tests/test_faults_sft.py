"""kill -9 at three moments of a tiny SFT run — before the first checkpoint, while a checkpoint is being
written, after the last one — and the rerun's adapter equals an uninterrupted run's.

The kills are real SIGKILLs of a real training subprocess, delivered from inside it at the named
moment (a Trainer hook), so the state left on disk is exactly what a crash at that moment leaves.
The runs train the tiny random model (the `tiny` fixture): what is checked is the mechanics of
checkpoints and resume, which do not depend on real weights.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# The subprocess trains with the given spec; MOMENT says where it kills itself with SIGKILL.
SCRIPT = r"""
import json, os, signal, sys
from transformers import Trainer, TrainerCallback
from teachwhy.train import SFTSpec, run_sft

moment = sys.argv[2]

def die():
    os.kill(os.getpid(), signal.SIGKILL)

class Kill(TrainerCallback):
    def on_step_begin(self, args, state, control, **kw):
        if moment == "before-first-checkpoint" and state.global_step == 1:
            die()  # step 1 done and logged, its checkpoint not yet written (save_steps=2)
    def on_save(self, args, state, control, **kw):
        if moment == "after-last-checkpoint" and state.global_step == state.max_steps:
            die()  # the last checkpoint is complete; the adapter and summary are not written

if moment == "while-writing-checkpoint":
    orig_rng = Trainer._save_rng_state
    def cut(self, output_dir):
        if self.state.global_step == 4:
            die()  # model weights written, trainer_state.json not yet
        return orig_rng(self, output_dir)
    Trainer._save_rng_state = cut

orig = Trainer.__init__
def init(self, *a, **k):
    k["callbacks"] = list(k.get("callbacks") or []) + [Kill()]
    orig(self, *a, **k)
Trainer.__init__ = init
run_sft(SFTSpec.model_validate(json.loads(sys.argv[1])))
"""


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from teachwhy.data.build import build_dataset
    from teachwhy.teachers import get_teacher

    root = tmp_path_factory.mktemp("data")
    build_dataset("documents", get_teacher("builtin", seed=0), tokens=2500, seed=0, out=root / "documents")
    four = root / "four.jsonl"  # exactly four records: four optimizer steps at batch size 1
    four.write_text("".join((root / "documents" / "data.jsonl").read_text().splitlines(keepends=True)[:4]))
    return four


def _spec(data: Path, out: Path, model: str):
    from teachwhy.train import SFTSpec

    # 4 optimizer steps of one short document each, a checkpoint every 2 steps, float32 so that an
    # interrupted-and-resumed run can be compared with an uninterrupted one to tight tolerance
    return SFTSpec(model=model, data=[{"path": str(data)}], out=str(out), batch_size=1, save_steps=2, dtype="float32",
                   packing="off", max_length=512)


def _adapter(run_dir: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def reference(data, tiny, tmp_path_factory):
    from teachwhy.train import run_sft

    res = run_sft(_spec(data, tmp_path_factory.mktemp("ref"), tiny))
    assert res.summary["steps"] == 4, res.summary
    return res


@pytest.mark.parametrize("moment", ["before-first-checkpoint", "while-writing-checkpoint", "after-last-checkpoint"])
def test_kill_9_then_rerun_gives_the_uninterrupted_adapter(data, tiny, reference, tmp_path, moment):
    import torch

    from teachwhy.train import run_sft

    spec = _spec(data, tmp_path, tiny)
    p = subprocess.run([sys.executable, "-c", SCRIPT, spec.model_dump_json(), moment], capture_output=True,
                       text=True, timeout=600)
    assert p.returncode == -9, (moment, p.returncode, p.stderr[-2000:])
    run_dir = next(tmp_path.glob("sft-*"))
    assert not (run_dir / "summary.json").exists() and not (run_dir / "adapter").exists()
    cks = sorted((run_dir / "checkpoints").glob("checkpoint-*"))
    if moment == "while-writing-checkpoint":
        # the cut-off checkpoint-4 lacks its trainer state; the complete checkpoint-2 is still there
        assert (run_dir / "checkpoints" / "checkpoint-4").is_dir()
        assert not (run_dir / "checkpoints" / "checkpoint-4" / "trainer_state.json").exists()
    elif moment == "before-first-checkpoint":
        assert not cks

    resumed = run_sft(spec)
    assert resumed.summary["steps"] == 4
    expected_from = {"before-first-checkpoint": 0, "while-writing-checkpoint": 2, "after-last-checkpoint": 4}[moment]
    assert (resumed.summary.get("resumed_from_step") or 0) == expected_from
    got, want = _adapter(resumed.run_dir), _adapter(reference.run_dir)
    assert set(got) == set(want)
    for k in want:
        assert torch.allclose(got[k].float(), want[k].float(), atol=1e-5, rtol=1e-4), k
    log = [json.loads(x) for x in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4]  # one line per step, none repeated or lost
