"""Writers: where formatted records go.

Every writer has ``write(batch)``, ``flush()`` and ``close()`` (see
:class:`kakashi.typing.Writer`); ``batch`` is a sequence of formatted records (bytes,
no line terminator) written in order with as few system calls as the target allows.
"""

from kakashi.writers.basic import (
    CallableWriter,
    NullWriter,
    StreamWriter,
    callable_writer,
    console_writer,
    null_writer,
    stderr_writer,
    stdout_writer,
)
from kakashi.writers.file import FileWriter, PartialWriteError, file_writer
from kakashi.writers.network import SendWriter, batched
from kakashi.writers.reading import read_lines
from kakashi.writers.rotating import RotatingFileWriter, rotating_file_writer
from kakashi.writers.zstd import ZstdFileWriter, zstd_file_writer

__all__ = [
    "CallableWriter",
    "FileWriter",
    "NullWriter",
    "PartialWriteError",
    "RotatingFileWriter",
    "SendWriter",
    "batched",
    "StreamWriter",
    "ZstdFileWriter",
    "callable_writer",
    "console_writer",
    "file_writer",
    "null_writer",
    "read_lines",
    "rotating_file_writer",
    "stderr_writer",
    "stdout_writer",
    "zstd_file_writer",
]
