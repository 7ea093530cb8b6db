"""The messages between the server and its inference worker: typed, each a small dataclass.

They cross as pickles in frames of ``app.inference.framing``; the worker is the server's
own code, so pickle is safe here. (Decoders, which handle untrusted bytes, answer in a
fixed binary layout instead: ``app.inference.decoders``.)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NamedTuple

from app.card import ModelCard
from app.inference.served_model import Exported
from app.logs import LogFormat
from models.images import ImageError, InvertMode, Steps

if TYPE_CHECKING:  # app.runtime imports torch, which only the worker loads
    from app.runtime import RuntimeName

PixelType = Literal["uint8", "float32"]

# An idle worker says it is alive this often; the supervisor takes a longer silence for a hang.
HEARTBEAT_S = 0.5
# Uploads up to this size go to the worker as they are, and it decodes them itself
# (app.inference.worker); bigger ones go through the contained decoders first.
INLINE_MAX_BYTES = 2048


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker process needs to load its model: it starts with nothing else."""

    model_path: str
    device: str
    max_image_pixels: int
    flip_average: bool | None
    ood_threshold: float | None
    runtime: RuntimeName
    torch_threads: int
    max_batch_size: int
    max_wait_s: float
    # How long the worker polls for the next task before it sleeps (Settings.worker_spin_ms).
    spin_s: float = 0.0
    # The version the first worker loaded: a replacement refuses a file that changed since.
    # None for the first.
    version: str | None = None
    # The graph to serve in ONNX Runtime, exported where torch is; None: load the file with torch.
    exported: Exported | None = None
    log_level: str = "info"
    log_format: LogFormat = "text"


@dataclass(frozen=True)
class Decoded:
    """28x28 pixels the network sees: an upload a decoder decoded, or pixels a client sent.

    ``pixels`` holds 784 values in ``dtype``: uint8 (0-255), or float32 (0-1, little-endian).
    """

    pixels: bytes
    steps: Steps
    dtype: PixelType = "uint8"


@dataclass(frozen=True)
class Task:
    """One request: its uploads (small ones still encoded, the rest decoded) and options."""

    job_id: int
    uploads: tuple[bytes | Decoded, ...]
    invert: InvertMode
    keep_image: bool
    top_k: int
    # time.monotonic() after which the server has answered 504: the worker skips the task.
    # CLOCK_MONOTONIC is one clock for every process of the machine.
    deadline: float
    request_id: str | None = None  # for the worker's log lines about it
    traced: bool = False  # stamp its steps' times (``Timings``) for its trace


@dataclass
class Timings:
    """When a traced task's steps ran in the worker, in time.time_ns(): the wall clock, one
    for every process of the machine, and what a span's times are given in."""

    decode_start: int = 0  # 0: its uploads came decoded
    decode_end: int = 0
    queued: int = 0  # its images ready for a forward pass
    pass_start: int = 0  # the first pass that took one of its images
    pass_end: int = 0  # the last one's end
    batch_size: int = 0  # images in that last pass


@dataclass(frozen=True)
class Stop:
    """Answer what you hold, then exit."""


class Found(NamedTuple):
    """One image's answer: the ``top_k`` classes, best first, and what preprocessing did."""

    indices: list[int]
    probabilities: list[float]
    steps: Steps  # what preprocessing did
    pixels: bytes | None  # the 28x28 picture the network saw, when asked for
    ood_score: float | None = None  # None: the checkpoint has no out-of-distribution score
    out_of_distribution: bool | None = None


@dataclass(frozen=True)
class Answered:
    job_id: int
    found: list[Found]
    timings: Timings | None = None  # when the task was traced


@dataclass(frozen=True)
class Refused:
    """An upload the worker could not decode; the request fails with it."""

    job_id: int
    index: int
    error: ImageError


@dataclass(frozen=True)
class Bounced:
    """A request holding an upload too big to decode in the worker: decode it in a decoder."""

    job_id: int


@dataclass(frozen=True)
class Failed:
    """A forward pass raised: the request fails with a 500 (logged by the server)."""

    job_id: int
    reason: str


@dataclass(frozen=True)
class NotFinite:
    """The network's output for one image of the request is NaN or infinite: the request
    fails alone (a 500 saying so); the rest of its pass is answered."""

    job_id: int
    index: int


@dataclass(frozen=True)
class PassStats:
    """What the metrics record about the forward passes of one turn of the worker's loop,
    and the uploads it decoded."""

    batch_sizes: list[int]
    inference_s: list[float]
    queue_wait_s: list[float]
    decode_s: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Ready:
    pid: int
    card: ModelCard  # the model it loaded, as served (its runtime included)


@dataclass(frozen=True)
class LoadFailed:
    reason: str


@dataclass(frozen=True)
class Heartbeat:
    """Sent when the worker has been idle for a heartbeat interval: it is alive."""


ToWorker = Task | Stop
FromWorker = Answered | Refused | Bounced | Failed | NotFinite | PassStats | Ready | LoadFailed | Heartbeat
