"""Optional integrations with other training frameworks; the core never imports them.

- `gankit.integrations.lightning`: `GANModule` / `GANDataModule` for PyTorch Lightning
  (`pip install 'gankit[lightning]'`).

Experiment tracking (TensorBoard, W&B) lives in `gankit.track`.
"""
