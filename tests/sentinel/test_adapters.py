"""Lightning and Hugging Face adapters: a short real CPU training of a tiny model built from
a config, with and without an injected forward fault (skipped if the package is absent)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sdc.sentinel import SentinelConfig
from sdc.sentinel.inject import ActivationFault

pytestmark = pytest.mark.slow


def _config(tmp_path) -> SentinelConfig:
    return SentinelConfig(grad_every=1, param_every=2, local_every=1, warmup_steps=3, action="skip_step", check_budget=0,
                          database_url=f"sqlite:///{tmp_path / 'none' / 'sdc.db'}", outbox_dir=str(tmp_path / "outbox"))


@pytest.mark.parametrize("fault_step", [None, 8])
def test_lightning_callback(tmp_path, fault_step):
    pl = pytest.importorskip("lightning.pytorch") if _has("lightning") else pytest.importorskip("pytorch_lightning")
    from sdc.sentinel.adapters.lightning import SentinelCallback

    class Tiny(pl.LightningModule):
        def __init__(self, width: int = 8):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(width, 16), nn.Tanh(), nn.Dropout(0.1), nn.Linear(16, 1))
            self.fault = ActivationFault(self.net[3], flat_index=1, bit=30)

        def training_step(self, batch, batch_idx):
            if fault_step is not None and self.global_step == fault_step and not self.fault.fired:
                self.fault.arm()
            x, y = batch
            return nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    torch.manual_seed(0)
    x = torch.randn(64, 8)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)
    callback = SentinelCallback(_config(tmp_path))
    trainer = pl.Trainer(max_steps=12, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.callbacks.append(callback)
    trainer.fit(Tiny(), data)
    diagnoses = {v.step: v.diagnosis for v in callback.verdicts}
    assert len(diagnoses) == 12
    if fault_step is None:
        assert set(diagnoses.values()) == {"ok"}
    else:
        assert diagnoses[fault_step] == "transient"
        assert {d for s, d in diagnoses.items() if s != fault_step} == {"ok"}
    assert callback.sentinel.sink.failed == 0


def _has(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


@pytest.mark.parametrize("fault_step", [None, 6])
def test_hf_trainer_callback(tmp_path, fault_step):
    transformers = pytest.importorskip("transformers")
    from sdc.sentinel.adapters.hf import SentinelTrainer, SentinelTrainerCallback

    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=16)
    model = transformers.GPT2LMHeadModel(config)
    fault = ActivationFault(model.lm_head, flat_index=3, bit=30)
    g = torch.Generator().manual_seed(1)
    rows = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (48, 12), generator=g)]

    class Arm(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == fault_step:
                fault.arm()

    callback = SentinelTrainerCallback(_config(tmp_path))
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=10, per_device_train_batch_size=4,
                                          report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True,
                                          learning_rate=1e-3, disable_tqdm=True)
    trainer = SentinelTrainer(model=model, args=args, train_dataset=rows, sentinel_callback=callback, callbacks=[Arm()])
    trainer.train()
    diagnoses = {v.step: v.diagnosis for v in callback.verdicts}
    assert len(diagnoses) == 10
    if fault_step is None:
        assert set(diagnoses.values()) == {"ok"}
    else:
        assert diagnoses[fault_step] == "transient", diagnoses
        assert {d for s, d in diagnoses.items() if s != fault_step} == {"ok"}


def _replays_exactly(sentinel) -> bool:
    """Does the adapter's replay recompute this step's loss bit for bit?"""
    from sdc.sentinel.replayer import loss_fingerprint, rng_state

    with rng_state(sentinel.state.rng), torch.enable_grad():
        again = sentinel.replay_fn(sentinel.state.batch)
    return loss_fingerprint(again) == loss_fingerprint(sentinel.state.loss)


def test_hf_replay_recomputes_the_trainers_loss_exactly(tmp_path):
    """The Trainer normalises a causal-LM loss by the batch's token count (unshifted labels);
    ``model(**batch).loss`` averages over shifted tokens instead, so a replay that way differs
    at every step and every anomaly would read as 'transient'."""
    transformers = pytest.importorskip("transformers")
    from sdc.sentinel.adapters.hf import SentinelTrainer, SentinelTrainerCallback

    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=16))
    g = torch.Generator().manual_seed(1)
    rows = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (24, 12), generator=g)]
    callback = SentinelTrainerCallback(_config(tmp_path))
    seen = {"exact": [], "naive": []}

    class Probe(transformers.TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            sentinel = callback.sentinel
            seen["exact"].append(_replays_exactly(sentinel))
            naive = model(**{k: v for k, v in sentinel.state.batch.items()}).loss
            seen["naive"].append(bool(torch.equal(naive.detach(), sentinel.state.loss)))

    args = transformers.TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=5, per_device_train_batch_size=4,
                                          report_to=[], save_strategy="no", logging_strategy="no", use_cpu=True,
                                          learning_rate=1e-3, disable_tqdm=True)
    trainer = SentinelTrainer(model=model, args=args, train_dataset=rows, sentinel_callback=callback, callbacks=[Probe()])
    # The sentinel's callback runs last: a callback that changes gradients runs before the check.
    order = [type(c).__name__ for c in trainer.callback_handler.callbacks]
    assert order.index("SentinelTrainerCallback") > order.index("Probe")
    trainer.train()
    assert seen["exact"] == [True] * 5
    assert seen["naive"] == [False] * 5  # what the old replay computed


def test_lightning_gradient_accumulation_one_check_per_optimizer_step(tmp_path):
    pl = pytest.importorskip("lightning.pytorch") if _has("lightning") else pytest.importorskip("pytorch_lightning")
    from sdc.sentinel.adapters.lightning import SentinelCallback

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    exact = []

    class Probe(pl.Callback):
        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            exact.append(_replays_exactly(callback.sentinel))

    torch.manual_seed(0)
    x = torch.randn(96, 8)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)
    callback = SentinelCallback(_config(tmp_path))
    trainer = pl.Trainer(max_steps=10, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, default_root_dir=str(tmp_path),
                         accumulate_grad_batches=2)
    trainer.callbacks.extend([Probe(), callback])
    trainer.fit(Tiny(), data)
    assert [v.step for v in callback.verdicts] == list(range(10))  # one verdict per optimizer step
    assert all(v.ok for v in callback.verdicts)
    # Param checks at every other step (param_every=2), once each.
    assert [v.checks.count("params") for v in callback.verdicts] == [1, 0] * 5
    assert exact == [True] * 10  # the replay is scaled like the step (loss / accumulate_grad_batches)


def test_lightning_checkpoints_are_certified_and_verified(tmp_path):
    pl = pytest.importorskip("lightning.pytorch") if _has("lightning") else pytest.importorskip("pytorch_lightning")
    from click.testing import CliRunner

    from sdc.cli import cli
    from sdc.sentinel.adapters.lightning import SentinelCallback
    from sdc.sentinel.certify import read_manifest

    class Tiny(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.mse_loss(self.net(x), y)

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.05)

    torch.manual_seed(0)
    x = torch.randn(200, 8)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=4)
    config = SentinelConfig(audit_budget=0, database_url=f"sqlite:///{tmp_path / 'none' / 'sdc.db'}", outbox_dir=str(tmp_path / "outbox"))
    saver = pl.callbacks.ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), every_n_train_steps=10, save_top_k=-1)
    trainer = pl.Trainer(max_steps=45, accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=str(tmp_path), callbacks=[SentinelCallback(config), saver])
    trainer.fit(Tiny(), data)
    saved = sorted((tmp_path / "ckpt").glob("*.ckpt"))
    statuses = {p.name: read_manifest(p)["status"] for p in saved}
    assert statuses == {"epoch=0-step=10.ckpt": "certified", "epoch=0-step=20.ckpt": "certified",
                        "epoch=0-step=30.ckpt": "certified", "epoch=0-step=40.ckpt": "candidate"}, statuses
    result = CliRunner().invoke(cli, ["checkpoint", "verify", str(tmp_path / "ckpt")])
    assert result.exit_code == 0, result.output
    assert "resume from:" in result.output and "step=30.ckpt" in result.output.splitlines()[-1]


def test_hf_checkpoints_are_certified_and_verified(tmp_path):
    transformers = pytest.importorskip("transformers")
    from click.testing import CliRunner

    from sdc.cli import cli
    from sdc.sentinel.adapters.hf import SentinelTrainer, SentinelTrainerCallback
    from sdc.sentinel.certify import read_manifest

    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=16))
    g = torch.Generator().manual_seed(1)
    rows = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (200, 12), generator=g)]
    config = SentinelConfig(audit_budget=0, database_url=f"sqlite:///{tmp_path / 'none' / 'sdc.db'}", outbox_dir=str(tmp_path / "outbox"))
    args = transformers.TrainingArguments(output_dir=str(tmp_path / "hf"), max_steps=45, per_device_train_batch_size=4,
                                          report_to=[], save_strategy="steps", save_steps=10, logging_strategy="no",
                                          use_cpu=True, learning_rate=1e-3, disable_tqdm=True)
    SentinelTrainer(model=model, args=args, train_dataset=rows, sentinel_callback=SentinelTrainerCallback(config)).train()
    statuses = {p.name: read_manifest(p)["status"] for p in sorted((tmp_path / "hf").glob("checkpoint-*"))}
    assert statuses["checkpoint-10"] == "certified" and statuses["checkpoint-30"] == "certified"
    assert statuses["checkpoint-40"] == "candidate"
    result = CliRunner().invoke(cli, ["checkpoint", "verify", str(tmp_path / "hf")])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].startswith(f"resume from: {tmp_path / 'hf' / 'checkpoint-30'}")


def test_hf_two_ranks_diagnose_transient_persistent_and_data(tmp_path):
    """Two gloo ranks under the HF Trainer: an upset on rank 1 that a replay does not reproduce
    is transient, one that reproduces there but not on rank 0 is persistent, and a poisoned batch
    on rank 0 that rank 1 reproduces is the data's (correct) — which only works because the
    replay recomputes exactly the Trainer's loss."""
    pytest.importorskip("transformers")
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    from tests.sentinel.conftest import free_port

    worker = Path(__file__).with_name("hf_worker.py")
    results = {}
    for scenario in ("transient", "persistent", "data"):
        port = free_port()
        procs = [subprocess.Popen([sys.executable, str(worker), scenario, str(tmp_path), f"sqlite:///{tmp_path / 'none' / 'x.db'}"],
                                  env=dict(os.environ, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                                           MASTER_PORT=str(port), OMP_NUM_THREADS="1"),
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in range(2)]
        for p in procs:
            output, _ = p.communicate(timeout=300)
            assert p.returncode == 0, output[-3000:]
        results[scenario] = [json.loads((tmp_path / f"{scenario}-rank{r}.json").read_text()) for r in range(2)]
    for rank in range(2):
        bad = {v["step"]: v for v in results["transient"][rank] if v["diagnosis"] != "ok"}
        assert {s: (v["diagnosis"], v["suspects"]) for s, v in bad.items()} == {6: ("transient", [1])}
        bad = {v["step"]: v for v in results["persistent"][rank] if v["diagnosis"] != "ok"}
        assert {s: (v["diagnosis"], v["suspects"]) for s, v in bad.items()} == {6: ("persistent", [1])}
        data = results["data"][rank]
        assert ["replay", "correct"] in data[6]["findings"] and data[6]["suspects"] == []
        assert all(v["diagnosis"] in ("ok", "correct") for v in data)  # never blamed on a chip
