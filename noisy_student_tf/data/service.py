"""Training input on the tf.data service: decode, crop and RandAugment run on service workers
(other hosts), the trainer only receives finished batches.

A trainer given `--data_service_address` builds its usual training pipeline (data/pipeline.py)
and hands everything up to the batched, augmented images to the service. The service runs it in
`distributed_epoch` mode: the dispatcher deals the training files out to the workers as they ask
for more, so every file is read once per epoch whatever the number of workers (no worker repeats
another's data, a fast worker simply reads more). For that the file list is repeated at the source
and the in-memory cache is off (each worker would otherwise keep replaying the files it was dealt
first). When several trainer hosts read (multi-worker training), they share one job per input, so
the service splits batches between them instead of the per-host shard() of the local pipeline.

Workers must see the training files under the same paths as the trainer (shared storage, e.g. a
bucket); evaluation and prediction stay on the trainer. Batches arrive in the order workers finish
them: not deterministic.

`start_dispatcher` / `start_worker` are what tools/data_service.py runs on the service hosts.
"""

import socket
from typing import Optional

import tensorflow as tf

from noisy_student_tf.errors import UserInputError

PROTOCOL = "grpc"
DEFAULT_PORT = 5050


def normalize_address(address: str, flag: str = "data_service_address") -> str:
    """`host:port` or `grpc://host:port` -> `grpc://host:port` (one line naming `flag` if it
    is neither)."""
    address = address.strip()
    rest = address[len(PROTOCOL) + 3:] if address.startswith(f"{PROTOCOL}://") else address
    host, _, port = rest.rpartition(":")
    if not host or not port.isdigit() or "/" in rest:
        raise UserInputError(f"--{flag}={address!r} is not host:port or "
                             f"{PROTOCOL}://host:port")
    return f"{PROTOCOL}://{host}:{port}"


def check_reachable(address: str, flag: str = "data_service_address",
                    timeout_s: float = 10.0) -> None:
    """Stops with one line when nothing listens at the dispatcher's address (the service client
    would otherwise retry silently for ever)."""
    host, port = normalize_address(address, flag)[len(PROTOCOL) + 3:].rsplit(":", 1)
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            pass
    except OSError as e:
        raise UserInputError(
            f"--{flag}={address!r}: no tf.data service dispatcher answers there "
            f"({e.strerror or e}); start one with tools/data_service.py --role=dispatcher") \
            from None


def job_name(input_name: str, seed: int, num_consumers: int) -> Optional[str]:
    """A job shared by the trainer hosts (each batch goes to one of them), named by the input and
    the run's input seed (a resumed run starts a new job); None (a private job) for one host."""
    if num_consumers <= 1:
        return None
    return f"noisy-student-{input_name}-{seed}"


def distribute(ds: tf.data.Dataset, address: str, name: Optional[str]) -> tf.data.Dataset:
    """`ds`, produced by the service's workers (distributed_epoch: files dealt out dynamically)."""
    return ds.apply(tf.data.experimental.service.distribute(
        processing_mode=tf.data.experimental.service.ShardingPolicy.DYNAMIC,
        service=normalize_address(address), job_name=name))


def start_dispatcher(port: int = DEFAULT_PORT, work_dir: Optional[str] = None):
    """A dispatcher serving on `port` (0: any free port); with `work_dir`, its journal lives
    there and a restarted dispatcher picks up its jobs (fault tolerance)."""
    config = tf.data.experimental.service.DispatcherConfig(
        port=port, work_dir=work_dir, fault_tolerant_mode=bool(work_dir))
    return tf.data.experimental.service.DispatchServer(config)


def start_worker(dispatcher: str, port: int = 0, worker_address: Optional[str] = None):
    """A worker registered with `dispatcher` (host:port), serving on `port` (0: any). Trainers
    reach it at `worker_address` (default: this host's name and the port)."""
    target = normalize_address(dispatcher)[len(PROTOCOL) + 3:]
    kwargs = {"worker_address": worker_address} if worker_address else {}
    config = tf.data.experimental.service.WorkerConfig(dispatcher_address=target, port=port,
                                                       **kwargs)
    return tf.data.experimental.service.WorkerServer(config)
