"""Callback shape detection: ``callback_shape`` and ``Callbacks`` (``trio_tcp._service``).

The ``on_bytes`` form, ``(data)`` or ``(caller, data)``, is decided once from
the callback's *required* positional parameters; sync and async callbacks are
told apart once too, so the per-chunk path is a plain call.
"""

from __future__ import annotations

import dataclasses
import functools
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing

import trio_tcp
from trio_tcp._caller import Caller
from trio_tcp._service import Callbacks, call, callback_shape
from trio_tcp._streams import Endpoints
from trio_tcp._writer import Writer

MANY = 1 << 16  # what callback_shape reports as "accepted" for *args


def make_caller() -> Caller:
    _, server = trio.testing.memory_stream_pair()
    return Caller(Writer(server), Endpoints("127.0.0.1", 40000, "127.0.0.1", 3000), lambda: None)


# -- callback_shape: (is async, required positional, accepted positional) -----------------


class Methods:
    async def async_data(self, data: bytes) -> None: ...

    def sync_caller_data(self, caller: Caller, data: bytes) -> None: ...

    async def data_with_default(self, data: bytes, extra: int = 0) -> None: ...

    async def caller_with_default_data(self, caller: Caller, data: bytes = b"") -> None: ...

    def star_args(self, *args: Any) -> None: ...

    async def keyword_only(self, data: bytes, *, flag: bool = False) -> None: ...

    def nothing(self) -> None: ...

    @staticmethod
    async def static_data(data: bytes) -> None: ...

    @classmethod
    def class_data(cls, data: bytes) -> None: ...


async def plain_async(data: bytes) -> None: ...


def plain_sync(caller: Caller, data: bytes) -> None: ...


class AsyncCallable:
    async def __call__(self, data: bytes) -> None: ...


class SyncCallable:
    def __call__(self, caller: Caller, data: bytes) -> None: ...


@dataclasses.dataclass
class UnhashableAsyncCallable:  # eq=True makes instances unhashable
    label: str = "x"

    async def __call__(self, data: bytes) -> None: ...


SHAPES = [
    pytest.param(Methods().async_data, (True, 1, 1), id="bound-async-data"),
    pytest.param(Methods().sync_caller_data, (False, 2, 2), id="bound-sync-caller-data"),
    pytest.param(Methods().data_with_default, (True, 1, 2), id="bound-default"),
    pytest.param(Methods().caller_with_default_data, (True, 1, 2), id="bound-default-data"),
    pytest.param(Methods().star_args, (False, 0, MANY - 1), id="bound-star-args"),
    pytest.param(Methods().keyword_only, (True, 1, 1), id="bound-keyword-only"),
    pytest.param(Methods().nothing, (False, 0, 0), id="bound-no-parameters"),
    pytest.param(Methods().static_data, (True, 1, 1), id="staticmethod"),
    pytest.param(Methods().class_data, (False, 1, 1), id="classmethod"),
    pytest.param(plain_async, (True, 1, 1), id="function-async"),
    pytest.param(plain_sync, (False, 2, 2), id="function-sync"),
    pytest.param(lambda data: data, (False, 1, 1), id="lambda"),
    pytest.param(lambda *args: None, (False, 0, MANY), id="lambda-star-args"),
    pytest.param(AsyncCallable(), (True, 1, 1), id="async-call-object"),
    pytest.param(SyncCallable(), (False, 2, 2), id="sync-call-object"),
    pytest.param(UnhashableAsyncCallable(), (True, 1, 1), id="unhashable-async-call-object"),
    pytest.param(functools.partial(plain_sync, make_caller()), (False, 1, 1), id="partial-sync"),
    pytest.param(functools.partial(plain_async), (True, 1, 1), id="partial-async"),
]


@pytest.mark.parametrize(("callback", "shape"), SHAPES)
def test_callback_shape(callback: Callable[..., Any], shape: tuple[bool, int, int]) -> None:
    assert callback_shape(callback) == shape


def test_shape_is_the_same_for_every_instance() -> None:
    assert callback_shape(Methods().async_data) == callback_shape(Methods().async_data)


# -- Callbacks: the form chosen once per connection ---------------------------------------


@pytest.mark.trio
async def test_data_form_is_called_with_data_only() -> None:
    received: list[bytes] = []

    class Service:
        async def on_bytes(self, data: bytes) -> bytes:
            received.append(data)
            return data

    callbacks = Callbacks(Service(), make_caller())
    assert callbacks.bytes_async
    assert callbacks.on_bytes is not None
    assert await callbacks.on_bytes(b"x") == b"x"
    assert received == [b"x"]


def test_caller_form_gets_the_caller_bound() -> None:
    received: list[tuple[Caller, bytes]] = []

    class Service:
        def on_bytes(self, caller: Caller, data: bytes) -> None:
            received.append((caller, data))

    caller = make_caller()
    callbacks = Callbacks(Service(), caller)
    assert not callbacks.bytes_async
    assert callbacks.on_bytes is not None
    callbacks.on_bytes(b"y")
    assert received == [(caller, b"y")]


def test_optional_second_parameter_means_the_data_form() -> None:
    received: list[object] = []

    class Service:
        def on_bytes(self, data: bytes, extra: object = "default") -> None:
            received.append((data, extra))

    callbacks = Callbacks(Service(), make_caller())
    assert callbacks.on_bytes is not None
    callbacks.on_bytes(b"z")
    assert received == [(b"z", "default")]


def test_star_args_gets_the_data_only() -> None:
    received: list[tuple[object, ...]] = []

    class Service:
        def on_bytes(self, *args: object) -> None:
            received.append(args)

    callbacks = Callbacks(Service(), make_caller())
    assert callbacks.on_bytes is not None
    callbacks.on_bytes(b"w")
    assert received == [(b"w",)]


@pytest.mark.trio
async def test_async_call_object_as_on_bytes() -> None:
    class Echo:
        async def __call__(self, data: bytes) -> bytes:
            return data * 2

    service = type("Service", (), {})()
    service.on_bytes = Echo()
    callbacks = Callbacks(service, make_caller())
    assert callbacks.bytes_async
    assert callbacks.on_bytes is not None
    assert await callbacks.on_bytes(b"ab") == b"abab"


def test_missing_methods_are_none() -> None:
    class Nothing:
        pass

    callbacks = Callbacks(Nothing(), make_caller())
    assert callbacks.on_bytes is None
    assert callbacks.framing is None


def test_base_class_supplies_no_op_error_and_close_but_no_on_bytes() -> None:
    service = trio_tcp.ConnectionService()
    assert Callbacks(service, make_caller()).on_bytes is None
    assert callable(service.on_error)
    assert callable(service.on_close)


def test_framing_attribute_is_picked_up() -> None:
    class Lines:
        framing = trio_tcp.framing.Delimited(b"\n")

        async def on_bytes(self, line: bytes) -> None: ...

    assert Callbacks(Lines(), make_caller()).framing is Lines.framing


class NoParameters:
    def on_bytes(self) -> None: ...


class NoParametersStatic:
    @staticmethod
    async def on_bytes() -> None: ...


class KeywordOnly:
    async def on_bytes(self, *, data: bytes) -> None: ...


@pytest.mark.parametrize(
    "service",
    [
        pytest.param(NoParameters(), id="method-without-data"),
        pytest.param(NoParametersStatic(), id="staticmethod-without-data"),
        pytest.param(KeywordOnly(), id="keyword-only-data"),
    ],
)
def test_bad_on_bytes_signature_is_a_type_error(service: object) -> None:
    with pytest.raises(TypeError, match=r"on_bytes must take \(data\) or \(caller, data\)"):
        Callbacks(service, make_caller())


# -- call: one helper for the rare callbacks ------------------------------------------------


@pytest.mark.trio
async def test_call_awaits_async_and_returns_sync_results() -> None:
    async def async_double(value: int) -> int:
        return value * 2

    def sync_double(value: int) -> int:
        return value * 2

    assert await call(async_double, 2) == 4
    assert await call(sync_double, 3) == 6


def test_framing_is_reachable_after_a_plain_import() -> None:
    # In a fresh interpreter: here, other tests may already have imported it.
    code = "import trio_tcp; print(trio_tcp.framing.Delimited.__name__)"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "Delimited"
