"""The catalog of rules (known and found), the torch.optim adapter and the exporters."""
