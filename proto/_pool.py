"""The descriptor pool that holds driftline's generated protocol messages.

driftline's messages live in a private pool, not protobuf's default one, because stock clients
(tritonclient among them) register messages of the same names (``inference.ModelInferRequest``)
in the default pool: two definitions of one name in one pool refuse to load, and a program that
uses driftline and tritonclient side by side must be able to import both.
"""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
