"""User errors in the command line and the training scripts: one clear line and exit code 2.

A user error is something the person running the command can fix: a bad argument or flag value (our
checks raise `UserError`, a `ValueError` naming the argument), a missing file or folder, a model that cannot be found, no Hugging Face
token, a Hub that refuses the token or cannot be reached. Those print `prog: message` on stderr and
exit with status 2, as argparse does for a malformed command line. Everything else is a bug and keeps
its traceback, a `ValueError` raised anywhere else included (`SD_SPARSE_TRACEBACK=1` keeps it for user
errors too).
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator, Optional

from .extras import install_hint

EXIT_USER_ERROR = 2


class UserError(ValueError):
    """Bad input that the caller can fix, named in the message (the argument, its expected shape or range).

    A `ValueError`, so `except ValueError` keeps catching it; the command line shows it as one line,
    while any other exception (a `ValueError` from a library included) keeps its traceback."""


_SKIPPED_LINES = ("For more information check", "For more details, see")


def _lines(text: str, count: int) -> str:
    kept = [
        line.strip() for line in str(text).splitlines() if line.strip() and not line.strip().startswith(_SKIPPED_LINES)
    ]
    return " ".join(kept[:count])


def _is_network_error(err: BaseException) -> bool:
    """Connection refused, DNS failure, timeout: the transport errors of httpx (huggingface_hub) and requests."""
    for cls in type(err).__mro__:
        module = cls.__module__.split(".")[0]
        if module.startswith("httpx") and cls.__name__ in ("TransportError", "TimeoutException"):
            return True
        if module in ("requests", "urllib3") and cls.__name__ in ("ConnectionError", "Timeout", "NewConnectionError"):
            return True
    return isinstance(err, (ConnectionError, TimeoutError))


def _chain(err: BaseException) -> Iterator[BaseException]:
    """`err`, then what caused it (`raise ... from`, or the exception being handled), at most 10 deep."""
    for _ in range(10):
        if err is None:
            return
        yield err
        err = err.__cause__ or (None if err.__suppress_context__ else err.__context__)


def user_error_message(err: BaseException) -> Optional[str]:
    """The one-line message for a user error, or None for an exception that is a bug."""
    network = next((e for e in _chain(err) if _is_network_error(e)), None)
    if network is not None:  # also when the Hub client wrapped it (e.g. LocalEntryNotFoundError)
        endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
        return f"cannot reach the Hugging Face Hub at {endpoint} ({_lines(network, 1) or type(network).__name__})."
    hub_errors = ()
    try:
        from huggingface_hub import errors as hub

        hub_errors = (
            hub.HfHubHTTPError,
            hub.LocalTokenNotFoundError,
            hub.LocalEntryNotFoundError,
            hub.OfflineModeIsEnabled,
        )
    except ImportError:  # pragma: no cover - huggingface_hub is a dependency
        pass
    if hub_errors and isinstance(err, hub_errors):
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status == 401:
            return f"the Hugging Face Hub refused the token (401 Unauthorized): {_lines(err, 1)}"
        return _lines(err, 2) or type(err).__name__
    missing = install_hint(err)
    if missing is not None:  # an optional package: name the extra that installs it
        return missing
    if isinstance(err, UserError):
        return _lines(err, 3) or type(err).__name__
    if isinstance(err, OSError):  # a missing file or folder, a model not found by from_pretrained, a full disk
        return _lines(err, 2) or type(err).__name__
    return None


@contextlib.contextmanager
def exit_on_user_error(prog: str) -> Iterator[None]:
    """Within the block, a user error prints `prog: message` to stderr and exits with status 2."""
    try:
        yield
    except Exception as err:
        message = user_error_message(err)
        if message is None or os.environ.get("SD_SPARSE_TRACEBACK", "0") not in ("", "0"):
            raise
        print(f"{prog}: {message}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USER_ERROR) from None
