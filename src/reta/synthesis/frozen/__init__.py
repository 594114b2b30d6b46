"""Frozen-backbone family: LGM and SFM on a frozen (self-supervised) backbone (see ``family``)."""
