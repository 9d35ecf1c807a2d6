"""The one exception family for user mistakes.

Every error a user can cause (bad model file, unsupported op, bad pipeline string,
wrong feed, ...) is a `QuantirError` whose message names the place and the fix.
The command-line tools print it on one line and exit non-zero; anything else that
escapes is a bug in quantir and keeps its traceback.
"""


class QuantirError(Exception):
    """A user-facing error: one line naming the place and what to do."""


class ModelError(QuantirError):
    """The input model cannot be read or imported."""


class UnsupportedOpError(ModelError):
    """The model uses operators quantir does not import."""


class ShapeError(ModelError):
    """A shape is dynamic and cannot be resolved, or shapes do not agree."""


class FeedError(QuantirError):
    """A run was given inputs with a wrong name, shape or dtype."""


class PipelineError(QuantirError):
    """A pass pipeline string or pass option is malformed."""


class TargetError(QuantirError):
    """A target description is unknown or malformed (the message names file:line)."""


class LegalityError(QuantirError):
    """The module cannot run on the target as configured.

    `summary` is one line; `diagnostics` holds one line per problem. The command-line
    tools print the summary and then each diagnostic on its own line.
    """

    def __init__(self, summary: str, diagnostics: tuple[str, ...] = ()):
        self.summary = summary
        self.diagnostics = diagnostics
        super().__init__("\n".join([summary, *diagnostics]))
