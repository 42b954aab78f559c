"""Recommenders over user histories: SASRec (the ID baseline), RecGPT (item-token generation), SETRec (set ids)."""
