"""The lifecycle of what the router opens once and closes once (a review backend, a client).

:class:`AsyncResource` writes ``async with`` once: a subclass implements :meth:`open` and
:meth:`aclose` (either may be left as the default, which does nothing), and ``async with x:``
opens it and closes it however the block ends.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self, final


class AsyncResource:
    """Opened once with :meth:`open`, released with :meth:`aclose` (safe to call again)."""

    async def open(self) -> None:
        """Connect or acquire. Default: nothing to do."""

    async def aclose(self) -> None:
        """Release what :meth:`open` took; safe to call more than once. Default: nothing."""

    @final
    async def __aenter__(self) -> Self:
        await self.open()
        return self

    @final
    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
