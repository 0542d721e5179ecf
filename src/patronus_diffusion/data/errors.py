from ..utils.errors import UserError


class DataError(UserError, RuntimeError):
    """A dataset or image cannot be read; the message names the file and says what to do."""
