"""The Open Inference Protocol (V2 REST), with Triton's binary tensor data extension.

``schemas`` holds the protocol's JSON objects, ``codec`` turns an inference request's
body into what the engine takes and its answers into the protocol's response; the routes
are in ``app.routes.v2``.
"""
