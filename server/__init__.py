"""The server: Open Inference Protocol over grpc.aio.

The request path, one module each: ``decode`` (protocol tensors -> numpy rows), ``run`` (the
onnxruntime call, off the event loop), ``encode`` (numpy -> protocol response). Around it:
``model`` (one loaded version), ``repository`` (which versions serve which names), ``service``
(the thin gRPC handlers), ``status`` (errors -> gRPC codes, the one boundary), ``app`` (builds the
server from its parts).
"""
