"""subaudit: a behavioural audit for LoRA-finetuned language models."""
