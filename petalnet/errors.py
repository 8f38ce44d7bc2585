"""Errors petalnet raises for bad input. The CLI prints them as one line and exits non-zero."""


class PetalnetError(Exception):
    """Base class: a problem with the user's input, reported without a traceback."""


class DataError(PetalnetError):
    """A data file is unreadable or wrong; the message names the file and where."""

    def __init__(self, path: str, what: str, offset: int | None = None):
        self.path, self.what, self.offset = str(path), what, offset
        where = f" at byte offset {offset}" if offset is not None else ""
        super().__init__(f"{self.path}{where}: {what}")

    def __reduce__(self):   # pickled from DataLoader worker processes to the main one
        return type(self), (self.path, self.what, self.offset)


class RecordError(DataError):
    """TFRecord framing is broken: bad checksum, truncation, not a TFRecord file."""


class ExampleError(PetalnetError):
    """A record's payload is not a valid tf.train.Example, or lacks a feature we need."""


class OptionError(PetalnetError):
    """A command-line option's value is out of range: exit status 2, as argparse's own errors."""
