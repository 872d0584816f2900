"""tensorgate's front end: gRPC service, model management, command line."""

__version__ = "0.1.0"
