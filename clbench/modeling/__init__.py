"""Model construction and loading: the embedded tiny model, its tokenizer, local checkpoints, LoRA."""
