"""The production front door: Riva ASR gRPC + the OpenAI audio API in front of Triton (docs/SERVING.md)."""
