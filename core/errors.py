"""One small error hierarchy: every error this project raises on purpose derives from
:class:`SnnDeployError`, so each command can turn it into one clear line instead of a traceback."""


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
