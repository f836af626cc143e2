"""gRPC server reflection (what grpcurl, grpcui and Postman read to learn the services).

driftline's messages live in a private descriptor pool (see proto/_pool.py), while the health and
reflection services' own messages are in protobuf's default pool. Reflection reads one pool, so it
is given a view that looks in driftline's first and in the default one after.
"""

from __future__ import annotations

import grpc
from google.protobuf import descriptor_pool
from google.protobuf.descriptor import Descriptor, FieldDescriptor, FileDescriptor
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection

from driftline.proto import driftline_pb2, grpc_service_pb2
from driftline.proto._pool import POOL


def service_names() -> list[str]:
    """Every service this server offers, by full name."""
    files = (grpc_service_pb2.DESCRIPTOR, driftline_pb2.DESCRIPTOR, health_pb2.DESCRIPTOR)
    return [s.full_name for f in files for s in f.services_by_name.values()] + [reflection.SERVICE_NAME]


def enable(server: grpc.aio.Server) -> None:
    reflection.enable_server_reflection(service_names(), server, pool=Pools(POOL, descriptor_pool.Default()))


class Pools:
    """The lookups reflection makes, answered by the first pool that knows the name.

    A file's dependencies are in the pool the file came from, so a file descriptor and everything it
    imports always come from one pool.
    """

    def __init__(self, *pools: descriptor_pool.DescriptorPool) -> None:
        self._pools = pools

    def FindFileByName(self, name: str) -> FileDescriptor:  # noqa: N802 - DescriptorPool's names
        return self._first("FindFileByName", name)

    def FindFileContainingSymbol(self, symbol: str) -> FileDescriptor:  # noqa: N802
        try:
            return self._first("FindFileContainingSymbol", symbol)
        except KeyError:
            pass
        # protobuf's upb pools find only top-level symbols, and grpcurl also asks for methods and
        # nested types ("describe inference.GRPCInferenceService.ModelInfer"): look in the file of
        # the nearest enclosing symbol the pools know.
        outer = symbol
        while "." in outer:
            outer = outer.rpartition(".")[0]
            try:
                file = self._first("FindFileContainingSymbol", outer)
            except KeyError:
                continue
            if symbol in _declared(file):
                return file
            break
        raise KeyError(symbol)

    def FindMessageTypeByName(self, name: str) -> Descriptor:  # noqa: N802
        return self._first("FindMessageTypeByName", name)

    def FindExtensionByNumber(self, message: Descriptor, number: int) -> FieldDescriptor:  # noqa: N802
        return message.file.pool.FindExtensionByNumber(message, number)

    def FindAllExtensions(self, message: Descriptor) -> list[FieldDescriptor]:  # noqa: N802
        return message.file.pool.FindAllExtensions(message)

    def _first(self, method: str, name: str):
        for pool in self._pools:
            try:
                return getattr(pool, method)(name)
            except KeyError:
                continue
        raise KeyError(name)  # what reflection turns into NOT_FOUND


def _declared(file: FileDescriptor) -> set[str]:
    """Full names of the messages, enums, fields, services and methods ``file`` declares, nested ones included."""
    names: set[str] = set()

    def message(descriptor: Descriptor) -> None:
        names.add(descriptor.full_name)
        names.update(d.full_name for d in (*descriptor.fields, *descriptor.extensions, *descriptor.oneofs,
                                           *descriptor.enum_types))
        for nested in descriptor.nested_types:
            message(nested)

    for descriptor in file.message_types_by_name.values():
        message(descriptor)
    names.update(d.full_name for d in (*file.enum_types_by_name.values(), *file.extensions_by_name.values()))
    for service in file.services_by_name.values():
        names.add(service.full_name)
        names.update(method.full_name for method in service.methods)
    return names
