"""Adapters that call the sentinel's hooks from common training stacks: DDP (with a
comm-hook wrapper), FSDP2/HSDP, Lightning, Hugging Face Trainer. Lightning and transformers
are imported only by their own modules."""
