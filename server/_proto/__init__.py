"""Generated protobuf / gRPC stubs for the inference protocol. Do not edit.

Sources: proto/grpc_service.proto and proto/model_config.proto.
Regenerate with ``python3 scripts/gen_proto.py``; CI runs ``python3 scripts/gen_proto.py --check``.
"""
