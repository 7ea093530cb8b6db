"""The serving core: one engine, one batching rule, one worker (process or thread), and
contained decoders for untrusted uploads.

    protocol.py    what routes need (``Engine``) and its refusals
    engine.py      admission, the timeout, the way to and from the worker
    supervisor.py  the worker's life: start, heartbeat, replace
    hosts.py       where the worker runs: a child process or a thread
    worker.py      decode -> batch -> predict -> unbatch
    batching.py    the batching rule
    decoders.py    processes that decode untrusted uploads under memory and CPU budgets
    messages.py    the typed messages; framing.py the frames they cross in
"""
