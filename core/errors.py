"""One small error hierarchy: every error this project raises on purpose derives from
:class:`SnnDeployError`, so each command can turn it into one clear line instead of a traceback
(:func:`error_line`, which also words the operating system's errors and running out of memory)."""


class SnnDeployError(Exception):
    """Root of every error the project raises on purpose."""


class ConfigError(SnnDeployError):
    """A config file or flag is wrong: unknown key, wrong type, bad value."""


class DataError(SnnDeployError):
    """Input data is missing, unreadable or malformed (names the file and, where known, the offset)."""


class CheckpointError(SnnDeployError):
    """A checkpoint is missing, corrupt, foreign or unsafe to load."""


class ModelError(SnnDeployError):
    """An unknown architecture, an unsupported layer or a model that cannot be built."""


class TrainingError(SnnDeployError):
    """Training cannot go on (a NaN loss, a distributed setup that does not fit)."""


def first_line(e: BaseException, limit: int | None = 300) -> str:
    """The first line of another library's message (up to ``limit`` characters; "" when it has none),
    to quote inside one of ours."""
    return (str(e).strip().splitlines() or [""])[0][:limit]


MEMORY_HINT = "fewer samples at a time (--samples, --batch-size) or fewer steps (--steps) need less"


def error_line(e: BaseException, memory_hint: str = MEMORY_HINT) -> str:
    """The one line a command prints for an error (its own, the operating system's naming the file,
    or running out of memory, with ``memory_hint``: the command's flags that need less), after ``error:``."""
    if isinstance(e, OSError) and not isinstance(e, SnnDeployError):
        return f"{e.filename}: {e.strerror or e}" if e.filename else str(e.strerror or e)
    if isinstance(e, MemoryError):
        what = str(e).strip() or "an allocation failed"
        return f"out of memory: {what}; {memory_hint}"
    return str(e)
