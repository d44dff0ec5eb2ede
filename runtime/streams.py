"""A light hot observable for the loop thread: the engine's inlets and the sources' ports.

:class:`HotPort` is what a ``reactivex.subject.Subject`` is used for inside les02-flow -- a
hot stream that any number of observers subscribe to -- without what costs per message and is
not needed there: the lock (everything runs on the event-loop thread), the copy of the observer
list on every message, and the ``check_disposed`` test. Emitting to one subscriber is one call.

Semantics kept from ``Subject``: late subscribers of a completed port get ``on_completed`` at
once; ``on_error`` and ``on_completed`` are delivered once and end the stream; disposing a
subscription removes its observer (also while an emission is under way: the next message no
longer reaches it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from reactivex import Observable, abc
from reactivex.disposable import Disposable

__all__ = ["HotPort"]

T = TypeVar("T")


class HotPort(Generic[T]):
    """A hot stream on one thread; :attr:`observable` is what ``build()`` hands out.

    >>> port: HotPort[int] = HotPort()
    >>> got = []
    >>> sub = port.observable.subscribe(got.append)
    >>> port.on_next(1); sub.dispose(); port.on_next(2); got
    [1]
    """

    def __init__(self) -> None:
        self._observers: tuple[abc.ObserverBase[T], ...] = ()
        self._stopped = False
        self._error: Exception | None = None
        #: emit one message (rebound whenever the subscribers change: a direct call for one)
        self.on_next: Callable[[T], None] = self._drop
        self.observable: Observable[T] = Observable(self._subscribe)

    def _subscribe(
        self, observer: abc.ObserverBase[T], scheduler: abc.SchedulerBase | None = None
    ) -> abc.DisposableBase:
        if self._stopped:
            if self._error is not None:
                observer.on_error(self._error)
            else:
                observer.on_completed()
            return Disposable()
        self._observers = (*self._observers, observer)
        self._rebind()

        def dispose() -> None:
            if observer in self._observers:
                self._observers = tuple(o for o in self._observers if o is not observer)
                self._rebind()

        return Disposable(dispose)

    def _rebind(self) -> None:
        observers = self._observers
        if self._stopped or not observers:
            self.on_next = self._drop
        elif len(observers) == 1:
            self.on_next = observers[0].on_next
        else:
            self.on_next = self._fan_out

    def _fan_out(self, value: T) -> None:
        for observer in self._observers:
            observer.on_next(value)

    def _drop(self, value: T) -> None:
        return None

    def emit(self, value: T) -> None:
        """``on_next`` through the current binding (for callers that keep a bound method)."""
        self.on_next(value)

    def on_error(self, error: Exception) -> None:
        if self._stopped:
            return
        self._stopped, self._error = True, error
        observers, self._observers = self._observers, ()
        self._rebind()
        for observer in observers:
            observer.on_error(error)

    def on_completed(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        observers, self._observers = self._observers, ()
        self._rebind()
        for observer in observers:
            observer.on_completed()
