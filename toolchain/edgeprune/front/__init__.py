"""The front half: load a model, prune, finetune, export to int8 TFLite, check fidelity."""
