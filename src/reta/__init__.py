"""reta: dataset distillation with PyTorch Lightning + Hydra (RETA, SRe2L, FADRM/FADRM+, DM/IDM/IID, baselines)."""

__version__ = "0.1.0"
