"""Typed exceptions. The CLI turns any EdgeseqError into one line on stderr and exit status 2."""
from __future__ import annotations


class EdgeseqError(Exception):
    """Base class of every error edgeseq raises on purpose."""


class GraphError(EdgeseqError):
    """A graph is malformed: dangling or duplicate names, bad order, bad attributes."""


class ShapeError(EdgeseqError):
    """A shape or dtype disagrees with what an op or a model expects."""


class UnsupportedModelError(EdgeseqError):
    """A foreign model uses ops or attribute values edgeseq cannot map."""


class ArtifactError(EdgeseqError):
    """An .eseq file is truncated, foreign, too new, corrupt or inconsistent with its graph."""


class InputError(EdgeseqError):
    """Inputs given to a model at run time are missing, misnamed, mis-shaped or non-finite."""
