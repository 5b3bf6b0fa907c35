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


class ModelFormatError(UnsupportedModelError):
    """A foreign model file is malformed: a field is missing, out of range or of the wrong
    kind. `file`, `node` (node or operator) and `field` say where; the message says what."""

    def __init__(self, message: str, *, file: str | None = None, node: str | None = None,
                 field: str | None = None) -> None:
        where = ", ".join(f"{k} {v!r}" for k, v in (("node", node), ("field", field)) if v)
        prefix = f"{file}: " if file and not message.startswith(f"{file}:") else ""
        super().__init__(f"{prefix}{message}" + (f" ({where})" if where else ""))
        self.file, self.node, self.field = file, node, field


class UntrustedCodeError(UnsupportedModelError):
    """Reading a model would run code stored in it (a pickle); refused unless trusted."""


class MemoryLimitError(EdgeseqError):
    """A run's estimated working memory passes the Model's budget (`memory_limit`)."""
