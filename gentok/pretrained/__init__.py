"""Converters from the official checkpoints of other projects to gentok models (see `gentok.pretrained.convert`).

Each module here is declared in the `gentok.converters` entry-point group and offers `detect(directory, config)` and
`convert(directory, config, map_location)`; `gentok.load` picks the one that recognises a snapshot.
"""
