"""One rank of a two-rank Hugging Face Trainer job over gloo (run by test_adapters.py): a tiny
GPT-2 from a config, trained with SentinelTrainer while one scenario plants a fault; writes the
rank's step verdicts as JSON."""

from __future__ import annotations

import json
import os
import sys

import torch
import transformers

from sdc.sentinel import SentinelConfig
from sdc.sentinel.adapters.hf import SentinelTrainer, SentinelTrainerCallback
from sdc.sentinel.inject import ActivationFault

FAULT_STEP = 6


def main(scenario: str, out: str, database: str) -> int:
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=16))
    g = torch.Generator().manual_seed(1)
    rows = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 64, (80, 12), generator=g)]
    fault = ActivationFault(model.lm_head, flat_index=3, bit=30, persistent=scenario == "persistent")
    config = SentinelConfig(grad_every=1, param_every=2, local_every=1, warmup_steps=3, action="skip_step", audit_every=0,
                            check_budget=0, database_url=database, outbox_dir=out + "/outbox")
    callback = SentinelTrainerCallback(config)
    args = transformers.TrainingArguments(output_dir=out + "/hf", max_steps=10, per_device_train_batch_size=4, report_to=[],
                                          save_strategy="no", logging_strategy="no", use_cpu=True, ddp_backend="gloo",
                                          learning_rate=1e-3, disable_tqdm=True, seed=0)
    rank = args.process_index

    class Plant(transformers.TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            if state.global_step == FAULT_STEP and rank == 1 and scenario in ("transient", "persistent"):
                fault.arm()

        def on_step_end(self, args, state, control, **kwargs):
            fault.disarm()

    class Poisoned(SentinelTrainer):
        def compute_loss(self, model, inputs, *a, **k):
            if scenario == "data" and rank == 0 and self.state.global_step == FAULT_STEP and model.training:
                # A poisoned batch: embeddings so large that the first LayerNorm overflows to NaN
                # on every chip that computes it.
                embeds = self.model.transformer.wte(inputs["input_ids"]).detach() * 1e30
                inputs = {"inputs_embeds": embeds, "labels": inputs["labels"]}
            return super().compute_loss(model, inputs, *a, **k)

    Poisoned(model=model, args=args, train_dataset=rows, sentinel_callback=callback, callbacks=[Plant()]).train()
    verdicts = [{"step": v.step, "diagnosis": v.diagnosis, "suspects": [s.rank for s in v.suspects],
                 "findings": v.details.get("findings")} for v in callback.verdicts]
    with open(f"{out}/{scenario}-rank{rank}.json", "w") as fh:
        json.dump(verdicts, fh)
    if callback.sentinel is not None:
        callback.sentinel.close()  # flushed already at the end of training; closing again is a no-op
    # Tear the gloo group down before the interpreter does: left to exit, its threads can
    # meet a half-destroyed process ("terminate called without an active exception").
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    code = main(*sys.argv[1:4])
    # Everything this worker reports is written (verdict files, the sentinel closed and its
    # events spooled, the process group destroyed). Skip the interpreter's teardown: under load
    # it aborted in one of three full-suite runs (2026-12-01) with "terminate called without an active
    # exception" (SIGABRT) from a C++ thread of torch/transformers, after the results were
    # written; the test is about the diagnoses, not torch's teardown (see the closing note).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
